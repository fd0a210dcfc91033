//! A net_pcap device with one capture per RX queue and `queues_hold_flows`:
//! the port gets one queue per file, without RSS, and each queue gives back
//! exactly its own file's frames.

mod common;

use common::{frame_bytes, write_pcap, Frame, Precision};
use mos_dpdk::{Burst, Eal, Port, PortOptions};

#[test]
fn each_queue_reads_its_own_capture() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..2u8)
        .map(|q| {
            let path = dir.path().join(format!("q{q}.pcap"));
            let frames: Vec<Frame> = (0..5u8)
                .map(|i| Frame {
                    sec: 1_700_000_000 + u32::from(i),
                    frac: 0,
                    bytes: frame_bytes(100 + usize::from(q) * 50, q * 10 + i),
                })
                .collect();
            write_pcap(&path, Precision::Micro, &frames);
            (path, frames)
        })
        .collect();
    let vdev = format!(
        "--vdev=net_pcap0,rx_pcap={},rx_pcap={}",
        files[0].0.display(),
        files[1].0.display()
    );
    let eal = Eal::init(&common::eal_args(&[&vdev])).expect("EAL init");
    let mut port = Port::start(
        &eal,
        0,
        PortOptions {
            rx_queues: 2,
            queues_hold_flows: true,
            ..PortOptions::default()
        },
    )
    .expect("start net_pcap with two queues");
    assert!(!port.rss(), "net_pcap has no RSS");
    assert_eq!(port.rx_queues(), 2);
    let (queues, _stats) = port.split_queues();
    for (mut q, (_, sent)) in queues.into_iter().zip(&files) {
        let mut got = Vec::new();
        let mut burst = Burst::new();
        for _ in 0..100 {
            if q.rx_burst(&mut burst) > 0 {
                got.extend(burst.iter().map(|p| p.data().to_vec()));
            }
            if got.len() >= sent.len() {
                break;
            }
        }
        let want: Vec<Vec<u8>> = sent.iter().map(|f| f.bytes.clone()).collect();
        assert_eq!(got, want, "queue {}", q.queue());
    }
}
