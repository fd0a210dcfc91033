//! The sensor's reading of an analyzer page, the one region an analyzer writes: the input is
//! a sequence of page contents (consumer indices anywhere, near the producer, back and forth;
//! heartbeat, pid and waiting words), attempts to resize the page, and the worker's own steps
//! (publishing events, lossless waits) in between, on a real worker's `Fanout` in lossless
//! mode with a stall timeout of zero, so that a stalling analyzer is detached at once instead
//! of holding the fuzzer.
//!
//! Checked after every step: the page cannot change size; the worker never publishes more than
//! a ring's capacity past the largest index the analyzer ever wrote (no record it did not claim
//! to have consumed is overwritten); a detached analyzer is told so in its ring header; and no
//! step panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mos_sensor::event::{Event, EventKind, FlowHandle};
use mos_sensor::publish::{
    create_analyzer, create_main, Attached, Fanout, FanoutOptions, HugePages, MainRegion,
    ToControl, ToWorker,
};
use shm_layout::control::Subscription;
use shm_layout::layout::{AnalyzerPage, ConfigInfo, EventRingHeader};
use shm_layout::{Hook, Side};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// Records per event ring.
const CAPACITY: u64 = 16;

/// One worker's fanout over a main region made once (the region lives as long as the process,
/// as in the sensor), and its channels; each input attaches a fresh analyzer to it.
struct Rig {
    /// Held so that the region stays reachable (the sensor keeps its own until it exits).
    _region: MainRegion,
    fanout: Fanout,
    to_worker: Sender<ToWorker>,
    from_worker: Receiver<ToControl>,
    next_id: u32,
}

fn rig() -> &'static Mutex<Rig> {
    static RIG: OnceLock<Mutex<Rig>> = OnceLock::new();
    RIG.get_or_init(|| {
        let cfg = ConfigInfo {
            chunk_size: 4096,
            buffers_per_worker: 2,
            chunks_per_worker: 2,
            chunk_map_len: 1,
            slots_per_worker: 4,
            pktlog_entries: 8,
            pktlog_bytes: 4096,
            event_ring_len: CAPACITY,
            idle_timeout_ns: 1,
            overlap_policy: 0,
        };
        let (region, mut parts) = create_main(
            &cfg,
            &Default::default(),
            1,
            1,
            HugePages::Off,
            true,
            &mut |_| {},
        )
            .expect("a main region");
        let part = parts.remove(0);
        let (to_worker, rx) = mpsc::channel();
        let (tx, from_worker) = mpsc::channel();
        let fanout = Fanout::new(
            0,
            FanoutOptions {
                lossless: true,
                stall_timeout_ns: Arc::new(AtomicU64::new(0)),
                stop: None,
                slots: cfg.slots_per_worker as usize,
            },
            rx,
            tx,
            part.info,
            part.pktlog,
        );
        Mutex::new(Rig {
            _region: region,
            fanout,
            to_worker,
            from_worker,
            next_id: 1,
        })
    })
}

fn event(pseq: u64) -> Event {
    Event {
        flow: FlowHandle {
            slot: 1,
            generation: 1,
        },
        pseq,
        side: Some(Side::Svr),
        hook: Hook::Rcv,
        kind: EventKind::ConnNewData,
        ts_ns: pseq,
        pkt_pos: pseq,
        tcp_flags: 0x18,
        seq: 1,
        ack: 1,
        payload_len: 1,
        head: 0,
        tail: pseq,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rig = rig().lock().unwrap_or_else(|p| p.into_inner());
    let id = rig.next_id;
    rig.next_id += 1;
    let (regions, fds) = create_analyzer(CAPACITY, 1, false).expect("analyzer regions");
    let page: &AnalyzerPage = regions.page.get(0).expect("page");
    let hdr: &EventRingHeader = regions
        .events
        .get(regions.plan.ring_off(0) as usize)
        .expect("ring header");
    for m in [
        ToWorker::Attach(Box::new(Attached {
            id,
            name: "fuzz".into(),
            pid: 1,
            regions: regions.clone(),
        })),
        ToWorker::Subscribe(
            id,
            Subscription {
                events: u64::MAX,
                packets: false,
            },
        ),
        ToWorker::Ready(id),
    ] {
        rig.to_worker.send(m).expect("the worker's channel");
    }
    rig.fanout.poll_control();

    // The largest consumer index the analyzer ever wrote: the worker may run at most a ring
    // ahead of it.
    let mut claimed = 0u64;
    let mut pseq = 0u64;
    let mut detached = false;
    for op in data.chunks(9) {
        let arg = op
            .get(1..9)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        let produced = hdr.producer.load(Ordering::Acquire);
        match op[0] % 8 {
            0 => page.consumer[0].index.store(arg, Ordering::Release),
            1 => {
                // Near the producer, either side of it.
                let v = produced.wrapping_add(arg % 64).wrapping_sub(32);
                page.consumer[0].index.store(v, Ordering::Release);
            }
            2 => {
                page.heartbeat_ns.store(arg, Ordering::Relaxed);
                page.pid.store(arg.rotate_left(17), Ordering::Relaxed);
                page.waiting.store(arg & 3, Ordering::Relaxed);
            }
            3 => {
                let n = 1 + arg % 8;
                let events: Vec<Event> = (0..n)
                    .map(|_| {
                        pseq += 1;
                        event(pseq)
                    })
                    .collect();
                rig.fanout.publish(&events, u64::MAX, None);
            }
            4 => {
                let _ = rig.fanout.passed();
            }
            5 => {
                let _ = rig.fanout.wait_passed(arg % (pseq + 2));
            }
            6 => {
                // The analyzer resizes its page: refused, whatever the size (its own size is
                // no change).
                let len = arg % (1 << 30);
                if len != regions.page.len() as u64 {
                    assert!(
                        rustix::fs::ftruncate(&fds.page_fd, len).is_err(),
                        "the analyzer page could be resized to {len}"
                    );
                }
            }
            _ => page.consumer[0].index.store(produced, Ordering::Release),
        }
        claimed = claimed.max(page.consumer[0].index.load(Ordering::Relaxed));
        let produced = hdr.producer.load(Ordering::Acquire);
        assert!(
            produced <= claimed.saturating_add(CAPACITY),
            "published {produced} records with only {claimed} claimed consumed"
        );
        while let Ok(ToControl::Detached(gone, _)) = rig.from_worker.try_recv() {
            assert_eq!(gone, id);
            assert_ne!(hdr.detached.load(Ordering::Acquire), 0);
            detached = true;
        }
        if detached {
            break;
        }
    }
    if !detached {
        rig.to_worker
            .send(ToWorker::Detach(id))
            .expect("the worker's channel");
        rig.fanout.poll_control();
    }
    assert_eq!(rig.fanout.attached(), 0);
});
