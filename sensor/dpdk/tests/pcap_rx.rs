//! net_pcap vdevs reading pcaps written here, one with microsecond and one
//! with nanosecond magic: every frame comes back byte for byte, in order,
//! with the timestamps the file holds; the stats agree.

mod common;

use common::{frame_bytes, write_pcap, Frame, Precision};
use mos_dpdk::{Burst, Eal, Port, PortOptions};

const SEC: u32 = 1_700_000_000;

fn frames(precision: Precision) -> Vec<Frame> {
    // Lengths: minimum, typical, full MTU, and a jumbo frame that spans two
    // mbuf segments (the default data room is 2048 bytes).
    let lens = [60usize, 98, 1514, 3000];
    lens.iter()
        .enumerate()
        .map(|(i, &len)| Frame {
            sec: SEC + i as u32,
            frac: match precision {
                Precision::Micro => 123_456 + i as u32,
                Precision::Nano => 123_456_789 + i as u32 * 1000,
            },
            bytes: frame_bytes(
                len,
                i as u8 + if precision == Precision::Nano { 100 } else { 0 },
            ),
        })
        .collect()
}

fn check_port(eal: &Eal, port_id: u16, precision: Precision, sent: &[Frame]) {
    let mut port = Port::start(eal, port_id, PortOptions::default()).expect("start net_pcap");
    assert_eq!(port.driver_name(), "net_pcap");
    assert!(!port.rss());
    assert!(
        port.has_rx_timestamp(),
        "net_pcap registers the timestamp field"
    );
    let mut batch = Burst::new();
    let mut got = Vec::new();
    let mut wholes = Vec::new();
    for _ in 0..10 {
        port.rx_burst(0, &mut batch);
        for p in batch.iter() {
            // The whole frame, from every segment of its chain.
            let whole: Vec<u8> = std::iter::once(p.data())
                .chain(p.more_segments())
                .flatten()
                .copied()
                .collect();
            assert_eq!(
                whole.len(),
                p.pkt_len() as usize,
                "segments add up to pkt_len"
            );
            wholes.push(whole);
            got.push((
                p.data().to_vec(),
                p.pkt_len(),
                p.data_len(),
                p.timestamp(),
                p.timestamp_ns(),
            ));
        }
    }
    assert_eq!(got.len(), sent.len(), "port {port_id}: frame count");
    for (i, (f, whole)) in sent.iter().zip(&wholes).enumerate() {
        assert_eq!(whole, &f.bytes, "frame {i}: all segments");
    }
    for (i, (f, (data, pkt_len, data_len, ts, ts_ns))) in sent.iter().zip(&got).enumerate() {
        assert_eq!(*pkt_len as usize, f.bytes.len(), "frame {i} pkt_len");
        assert_eq!(*data_len as usize, data.len(), "frame {i} data_len");
        if f.bytes.len() <= 2048 {
            assert_eq!(data, &f.bytes, "frame {i} bytes");
        } else {
            // Multi-segment: the first segment is a prefix, pkt_len > data_len.
            assert!(data.len() < f.bytes.len(), "frame {i} should be segmented");
            assert_eq!(
                data.as_slice(),
                &f.bytes[..data.len()],
                "frame {i} first segment"
            );
        }
        // net_pcap (DPDK 22.11) reports microseconds since the epoch; it
        // opens files at microsecond precision, so libpcap truncates the
        // nanosecond file's fraction to microseconds.
        let frac_us = match precision {
            Precision::Micro => u64::from(f.frac),
            Precision::Nano => u64::from(f.frac) / 1000,
        };
        let want_us = u64::from(f.sec) * 1_000_000 + frac_us;
        assert_eq!(*ts, Some(want_us), "frame {i} raw timestamp");
        assert_eq!(*ts_ns, Some(want_us * 1000), "frame {i} timestamp_ns");
    }
    let stats = port.stats().expect("stats");
    assert_eq!(stats.ipackets, sent.len() as u64, "{stats:?}");
    let bytes: usize = sent.iter().map(|f| f.bytes.len()).sum();
    assert_eq!(stats.ibytes, bytes as u64, "{stats:?}");
    assert_eq!(stats.ierrors, 0);
    assert_eq!(stats.rx_nombuf, 0);
}

#[test]
fn net_pcap_frames_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let us_path = dir.path().join("usec.pcap");
    let ns_path = dir.path().join("nsec.pcap");
    let us_frames = frames(Precision::Micro);
    let ns_frames = frames(Precision::Nano);
    write_pcap(&us_path, Precision::Micro, &us_frames);
    write_pcap(&ns_path, Precision::Nano, &ns_frames);
    let vdev0 = format!("--vdev=net_pcap0,rx_pcap={}", us_path.display());
    let vdev1 = format!("--vdev=net_pcap1,rx_pcap={}", ns_path.display());
    let eal = Eal::init(&common::eal_args(&[&vdev0, &vdev1])).expect("init");
    assert_eq!(eal.port_count(), 2);
    check_port(&eal, 0, Precision::Micro, &us_frames);
    check_port(&eal, 1, Precision::Nano, &ns_frames);
}
