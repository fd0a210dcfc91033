//! A small packet sniffer for the live tests: an `AF_PACKET` ring (`mos-afpacket`) on one
//! interface of a network namespace, read by a thread of the test process that writes every
//! frame to a classic pcap file, so that traffic captured live can be replayed through the
//! sensor afterwards.

use crate::netns;
use crate::pcap::PcapWriter;
use anyhow::{bail, ensure, Context, Result};
use mos_afpacket::{Ring, RingOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a sniffer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SniffStats {
    /// Frames written to the file.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames the kernel dropped because the ring was full: the file misses them.
    pub drops: u64,
}

/// A running sniffer; [`Sniffer::stop`] ends it and says what it wrote. Dropping it without
/// `stop` also ends the thread (and leaves the file as far as it got).
#[derive(Debug)]
pub struct Sniffer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<SniffStats>>>,
    path: PathBuf,
}

impl Sniffer {
    /// Starts capturing every frame of `iface` in network namespace `ns` (`None`: the test's
    /// own namespace) into the pcap file `path`; returns once the socket is bound, so no frame
    /// sent after this returns is missed.
    pub fn start(ns: Option<&str>, iface: &str, path: &Path) -> Result<Sniffer> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (ns, iface) = (ns.map(str::to_owned), iface.to_owned());
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("sniff-{iface}"))
            .spawn(move || -> Result<SniffStats> {
                let opened = (|| -> Result<Ring> {
                    if let Some(ns) = &ns {
                        netns::enter(ns)?;
                    }
                    // 128 MiB of ring: a few seconds of a saturated veth while the disk is busy.
                    let opts = RingOptions {
                        block_count: 128,
                        promiscuous: false,
                        ..RingOptions::default()
                    };
                    Ring::open(&iface, opts).with_context(|| format!("sniffing on {iface}"))
                })();
                let mut ring = match opened {
                    Ok(r) => {
                        let _ = ready_tx.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        let _ = ready_tx.send(Err(e));
                        bail!("{msg}");
                    }
                };
                let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
                let (mut frames, mut bytes) = (0u64, 0u64);
                loop {
                    // Once stopped, read on until the ring is empty: frames handed over in the
                    // last block timeout must not be missed.
                    let stopping = stop2.load(Ordering::Acquire);
                    let Some(block) = ring.next_block(Duration::from_millis(50))? else {
                        if stopping {
                            break;
                        }
                        continue;
                    };
                    for f in &block {
                        ensure!(
                            f.data.len() as u64 == u64::from(f.wire_len),
                            "frame of {} bytes captured as {}",
                            f.wire_len,
                            f.data.len()
                        );
                        ensure!(f.vlan_tci.is_none(), "a VLAN-tagged frame on {iface}");
                        w.packet(f.ts_ns / 1000, f.data)?;
                        frames += 1;
                        bytes += f.data.len() as u64;
                    }
                }
                w.finish()?;
                let drops = ring.stats()?.drops;
                Ok(SniffStats {
                    frames,
                    bytes,
                    drops,
                })
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let r = thread.join();
                bail!("the sniffer thread ended before opening its socket: {r:?}");
            }
        }
        Ok(Sniffer {
            stop,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }

    /// Stops the capture, flushes the file and says what it holds; fails if the kernel
    /// dropped frames (the file would not be the traffic) or writing failed.
    pub fn stop(mut self) -> Result<SniffStats> {
        self.stop.store(true, Ordering::Release);
        let t = self
            .thread
            .take()
            .context("the sniffer was already stopped")?;
        let st = match t.join() {
            Ok(r) => r.with_context(|| format!("sniffing into {}", self.path.display()))?,
            Err(_) => bail!("the sniffer thread panicked"),
        };
        ensure!(
            st.drops == 0,
            "the sniffer's socket dropped {} frames (the machine could not keep up): {} is \
             not the whole traffic",
            st.drops,
            self.path.display()
        );
        Ok(st)
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
