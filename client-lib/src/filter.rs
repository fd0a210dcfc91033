//! `mtcp_bind_monitor_filter`'s expressions, compiled here with libpcap's own compiler (the
//! syntax of `tcpdump` and `pcap-filter(7)`), once for each link type the sensor's input has.
//! The sensor runs the programs: an analyzer receives only the flows and packets they take.

use crate::error::{Errno, Error, Result};
use shm_layout::control::{LinkProgram, MAX_PROGRAM};

/// mOS's `monitor_filter_t`: the filters of one socket, as libpcap expressions. `None` (or an
/// empty string) leaves that filter as it was; see [`crate::Mos::bind_monitor_filter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorFilter<'a> {
    /// Stream sockets: a connection is the socket's when its first packet (the SYN, or the
    /// first packet seen of a connection picked up midstream) matches.
    pub stream_syn_filter: Option<&'a str>,
    /// Stream sockets: the orphan packets (`MOS_ON_ORPHAN`) the socket gets.
    pub stream_orphan_filter: Option<&'a str>,
    /// Raw sockets: the packets the socket gets.
    pub raw_pkt_filter: Option<&'a str>,
}

/// A compiled filter: its expression, and a program per link type it compiled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Compiled {
    pub expr: String,
    pub progs: Vec<LinkProgram>,
}

/// Compiles `expr` for each of `linktypes` (optimized, as tcpdump does). A link type the
/// expression makes no sense for (`vlan` on raw IP) gets no program: frames of that type match
/// nothing. `EINVAL` with libpcap's message when it compiles for none of the input's link
/// types (the first, the input's own, is the one whose message is shown), or when a program is
/// longer than the sensor runs.
pub(crate) fn compile(expr: &str, linktypes: &[u32]) -> Result<Compiled> {
    let mut progs = Vec::with_capacity(linktypes.len());
    let mut first_err = None;
    for &lt in linktypes {
        let cap = capture_file_of(lt)?;
        match cap.compile(expr, true) {
            Ok(p) => {
                let insns = p
                    .get_instructions()
                    .iter()
                    .map(|i| parse_insn(&i.to_string()))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(|| {
                        Error::new(
                            Errno::EINVAL,
                            format!("libpcap's program for {expr:?} could not be read"),
                        )
                    })?;
                if insns.len() > MAX_PROGRAM {
                    return Err(Error::new(
                        Errno::EINVAL,
                        format!(
                            "the filter {expr:?} compiles to {} instructions; the sensor runs at most {MAX_PROGRAM}",
                            insns.len()
                        ),
                    ));
                }
                progs.push(LinkProgram {
                    linktype: lt,
                    insns,
                });
            }
            Err(e) => {
                first_err.get_or_insert((lt, e.to_string()));
            }
        }
    }
    // The input's own link type (listed first) must take the expression: what tcpdump would
    // refuse on the capture is refused here too.
    let own_ok = linktypes
        .first()
        .is_none_or(|lt| progs.iter().any(|p| p.linktype == *lt));
    match first_err {
        Some((lt, msg)) if progs.is_empty() || !own_ok => Err(Error::new(
            Errno::EINVAL,
            format!(
                "bad filter {expr:?}: {} (link type {lt})",
                msg.trim_end_matches('\n')
            ),
        )),
        _ => Ok(Compiled {
            expr: expr.to_owned(),
            progs,
        }),
    }
}

/// A libpcap handle on an empty capture file of link type `linktype`, to compile with.
///
/// Not `pcap_open_dead`: for a dead handle libpcap compiles as for a live capture on this
/// machine, and some link types read differently in a file (a BSD loopback header's address
/// family is this system's `AF_INET6` live, any of the BSDs' values in a file), so the program
/// would not be the one tcpdump runs on the capture. The file is a pcap header in memory
/// (a memfd), opened through `/proc/self/fd`; libpcap takes the link type as a file's
/// `LINKTYPE_*`, so raw IP is 101 here as in the capture.
fn capture_file_of(linktype: u32) -> Result<pcap::Capture<pcap::Offline>> {
    let fail = |what: String| {
        Error::new(
            Errno::EINVAL,
            format!("cannot compile filters for link type {linktype}: {what}"),
        )
    };
    let fd = rustix::fs::memfd_create("mos-filter", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| fail(format!("memfd_create: {e}")))?;
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&0xa1b2_c3d4u32.to_ne_bytes()); // magic, microseconds
    header.extend_from_slice(&2u16.to_ne_bytes()); // version 2.4
    header.extend_from_slice(&4u16.to_ne_bytes());
    header.extend_from_slice(&0i32.to_ne_bytes()); // thiszone
    header.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
    header.extend_from_slice(&262_144u32.to_ne_bytes()); // snaplen, as tcpdump's default
    header.extend_from_slice(&linktype.to_ne_bytes());
    let written = rustix::io::write(&fd, &header).map_err(|e| fail(format!("write: {e}")))?;
    if written != header.len() {
        return Err(fail("short write".into()));
    }
    use std::os::fd::AsRawFd as _;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    // libpcap opens its own descriptor on the file; ours can go once it has.
    pcap::Capture::from_file(&path).map_err(|e| fail(e.to_string()))
}

/// libpcap's instruction as its `Display` shows it ("code jt jf k"), in the wire format of
/// [`LinkProgram::insns`].
fn parse_insn(s: &str) -> Option<u64> {
    let mut it = s.split_ascii_whitespace();
    let code: u16 = it.next()?.parse().ok()?;
    let jt: u8 = it.next()?.parse().ok()?;
    let jf: u8 = it.next()?.parse().ok()?;
    let k: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(u64::from(code) << 48 | u64::from(jt) << 40 | u64::from(jf) << 32 | u64::from(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_compile_per_link_type_and_bad_ones_say_why() {
        let c = compile("tcp port 80", &[1, 101]).unwrap();
        assert_eq!(c.progs.len(), 2);
        assert!(c.progs.iter().all(|p| !p.insns.is_empty()));
        // The last instruction of a libpcap program is a return (class 6).
        assert!(c
            .progs
            .iter()
            .all(|p| (p.insns.last().unwrap() >> 48) & 7 == 6));
        let e = compile("tcp prot 80", &[1]).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL);
        assert!(e.message().contains("syntax error"), "{e}");
        // `vlan` means nothing on raw IP: no program there, but Ethernet takes it.
        let c = compile("vlan and tcp", &[1, 101]).unwrap();
        assert_eq!(
            c.progs.iter().map(|p| p.linktype).collect::<Vec<_>>(),
            vec![1]
        );
        // On an input of raw IP only it is refused, as tcpdump would refuse it.
        assert_eq!(
            compile("vlan and tcp", &[101]).unwrap_err().errno(),
            Errno::EINVAL
        );
        // A BSD loopback capture's IPv6 is any of the BSDs' address families, as tcpdump reads
        // a file (not this machine's own AF_INET6, as for a live capture).
        let c = compile("ip6", &[0]).unwrap();
        let ks: Vec<u32> = c.progs[0].insns.iter().map(|&w| w as u32).collect();
        for af in [24u32, 28, 30] {
            assert!(
                ks.iter().any(|&k| k == af || k == af << 24),
                "AF {af} not tested in {ks:?}"
            );
        }
        // Raw IP by its file link type.
        assert_eq!(compile("ip", &[101]).unwrap().progs.len(), 1);
        assert_eq!(parse_insn("6 0 0 262144"), Some(6 << 48 | 262144));
        assert_eq!(parse_insn("6 0 0"), None);
        assert_eq!(parse_insn("6 0 0 1 2"), None);
    }
}
