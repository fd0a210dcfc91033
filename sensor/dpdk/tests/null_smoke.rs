//! net_null vdev: bursts arrive, mbufs can be taken and freed on another
//! thread, stats count them, queues split.

mod common;

use mos_dpdk::{Burst, Eal, Port, PortOptions, BURST};

#[test]
fn net_null_rx_smoke() {
    let eal = Eal::init(&common::eal_args(&["--vdev=net_null0,size=128"])).expect("init");
    let version = Eal::version().expect("DPDK is loaded");
    assert!(version.starts_with("DPDK 22.11"), "{version}");
    let mut port = Port::start(
        &eal,
        0,
        PortOptions {
            rx_queues: 2,
            rx_desc: 256,
            mbufs: 2047,
            promiscuous: true,
            ..PortOptions::default()
        },
    )
    .expect("start net_null");
    assert_eq!(port.driver_name(), "net_null");
    // net_null advertises RSS (it accepts the key and hash types, though it
    // hashes nothing), so the RSS configuration path with the symmetric key
    // runs here and both queues exist.
    assert!(port.rss());
    assert_eq!(port.rx_queues(), 2);

    let mut batch = Burst::new();
    let mut total = 0usize;
    for _ in 0..100 {
        let n = port.rx_burst(0, &mut batch);
        assert!(n <= BURST);
        assert_eq!(n, batch.len());
        for p in batch.iter() {
            assert_eq!(p.pkt_len(), 128);
            assert_eq!(p.data().len(), 128);
        }
        total += n;
    }
    assert!(total > 0, "net_null gave no packets");
    // Far more than the pool holds: mbufs are being freed and reused.
    assert!(total > 2047, "only {total}");

    // Take mbufs out and free them on a worker thread.
    let n = port.rx_burst(0, &mut batch);
    assert!(n >= 2);
    let a = batch.take(0);
    let b = batch.take(1);
    assert!(batch.try_get(0).is_none());
    let count = batch.iter().count();
    assert_eq!(count, n - 2);
    batch.clear();
    assert!(batch.is_empty());
    let lens = std::thread::spawn(move || (a.pkt_len(), b.data().len()))
        .join()
        .unwrap();
    assert_eq!(lens, (128, 128));

    // A registered thread has an lcore id (and so mbuf pool caches); it loses it when the
    // registration drops.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(mos_dpdk::lcore_id(), u32::MAX, "a plain thread has none");
            let reg = mos_dpdk::ThreadRegistration::new(&eal).expect("register");
            assert_ne!(mos_dpdk::lcore_id(), u32::MAX, "registered");
            drop(reg);
            assert_eq!(mos_dpdk::lcore_id(), u32::MAX, "unregistered");
        });
    });

    // Per-queue handles can be polled from their own threads.
    let per_queue: Vec<usize> = std::thread::scope(|s| {
        let (queues, stats) = port.split_queues();
        // The counters stay readable while the queues are out.
        assert!(stats.stats().is_ok());
        let handles: Vec<_> = queues
            .into_iter()
            .map(|mut q| {
                s.spawn(move || {
                    let mut local = Burst::new();
                    (0..10).map(|_| q.rx_burst(&mut local)).sum::<usize>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(per_queue.len(), 2);
    assert!(per_queue.iter().all(|&n| n > 0), "{per_queue:?}");

    let stats = port.stats().expect("stats");
    assert!(stats.ipackets >= total as u64, "{stats:?}");
    drop(batch);
    drop(port);
    drop(eal);
}
