//! What one analyzer subscribed to, socket by socket, and which of its sockets each flow
//! belongs to.
//!
//! A subscription arrives from an untrusted process: the control thread turns it into a
//! [`Sockets`] (validating every filter program) before a worker sees it. A socket's SYN
//! filter is run once per connection, on the first packet the worker publishes for it after
//! the socket asked (the SYN, or the first packet seen midstream); the answer is kept in the
//! analyzer's [`Picks`], one small entry per flow slot, until the slot is reused.

use crate::capture::RawPacket;
use crate::filter::{Insn, Program};
use shm_layout::control::{LinkProgram, SocketKind, SocketSub, Subscription, MAX_SOCKETS};
use shm_layout::EventMask;

/// A filter compiled for each link type of the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkFilter {
    progs: Vec<(u32, Program)>,
}

impl LinkFilter {
    fn new(progs: &[LinkProgram], what: &str, sock: u8) -> Result<LinkFilter, String> {
        let mut out: Vec<(u32, Program)> = Vec::with_capacity(progs.len());
        for p in progs {
            if out.iter().any(|(l, _)| *l == p.linktype) {
                return Err(format!(
                    "socket {sock}: two {what} programs for link type {}",
                    p.linktype
                ));
            }
            let insns = p.insns.iter().map(|&w| Insn::from_u64(w)).collect();
            let prog = Program::new(insns).map_err(|e| {
                format!(
                    "socket {sock}: the {what} program for link type {}: {e}",
                    p.linktype
                )
            })?;
            out.push((p.linktype, prog));
        }
        Ok(LinkFilter { progs: out })
    }

    /// Whether the frame matches (a link type without a program matches nothing).
    pub fn matches(&self, pkt: &RawPacket<'_>) -> bool {
        let code = pkt.link.code();
        self.progs
            .iter()
            .find(|(l, _)| *l == code)
            .is_some_and(|(_, p)| p.matches(pkt.data, pkt.orig_len))
    }
}

/// One monitoring socket, as the sensor keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// Its bit in an event's `socks`.
    pub bit: u32,
    /// Stream or raw.
    pub kind: SocketKind,
    /// Event bits its callbacks want.
    pub events: u64,
    /// `stream_syn_filter`.
    pub syn: Option<LinkFilter>,
    /// `stream_orphan_filter`.
    pub orphan: Option<LinkFilter>,
    /// `raw_pkt_filter`.
    pub raw: Option<LinkFilter>,
}

/// An analyzer's subscription: its sockets, and what they add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sockets {
    /// The sockets.
    pub socks: Vec<Socket>,
    /// Union of the stream sockets' event bits.
    pub events: u64,
    /// Whether the analyzer reads packets.
    pub packets: bool,
    /// Stream sockets with a SYN filter (their bits).
    pub syn_filtered: u32,
    /// Stream sockets without one: every flow is theirs.
    pub unfiltered: u32,
    /// Raw sockets (their bits).
    pub raw: u32,
    /// By event bit (`EventMask` bit index): the stream sockets that want it.
    want: [u32; 16],
}

impl Sockets {
    /// A 2.0 subscription: one socket standing for all, with no filter.
    pub fn legacy(sub: Subscription) -> Sockets {
        Sockets {
            socks: vec![Socket {
                bit: u32::MAX,
                kind: SocketKind::Stream,
                events: sub.events,
                syn: None,
                orphan: None,
                raw: None,
            }],
            events: sub.events,
            packets: sub.packets,
            syn_filtered: 0,
            unfiltered: u32::MAX,
            raw: 0,
            want: core::array::from_fn(|b| {
                if sub.events >> b & 1 != 0 {
                    u32::MAX
                } else {
                    0
                }
            }),
        }
    }

    /// Validates a per-socket subscription; the error is one sentence for the analyzer.
    pub fn new(packets: bool, subs: &[SocketSub]) -> Result<Sockets, String> {
        if subs.len() > MAX_SOCKETS {
            return Err(format!(
                "{} sockets in one subscription; at most {MAX_SOCKETS}",
                subs.len()
            ));
        }
        let mut out = Sockets {
            packets,
            ..Sockets::default()
        };
        for s in subs {
            if usize::from(s.id) >= MAX_SOCKETS {
                return Err(format!(
                    "socket id {} is out of range (0 to {})",
                    s.id,
                    MAX_SOCKETS - 1
                ));
            }
            let bit = 1u32 << s.id;
            if out.socks.iter().any(|o| o.bit == bit) {
                return Err(format!("socket {} is listed twice", s.id));
            }
            let filter = |f: &Option<Vec<LinkProgram>>, what: &str| {
                f.as_deref()
                    .map(|p| LinkFilter::new(p, what, s.id))
                    .transpose()
            };
            let sock = Socket {
                bit,
                kind: s.kind,
                events: s.events,
                syn: filter(&s.syn, "SYN filter")?,
                orphan: filter(&s.orphan, "orphan filter")?,
                raw: filter(&s.raw, "raw filter")?,
            };
            match sock.kind {
                SocketKind::Raw => {
                    if !packets {
                        return Err(format!(
                            "socket {} is a raw socket, which needs packets: subscribe with packets",
                            s.id
                        ));
                    }
                    out.raw |= bit;
                }
                SocketKind::Stream => {
                    out.events |= sock.events;
                    if sock.syn.is_some() {
                        out.syn_filtered |= bit;
                    } else {
                        out.unfiltered |= bit;
                    }
                }
            }
            out.socks.push(sock);
        }
        if out.raw != 0 {
            // Raw sockets get their packets as orphan events.
            out.events |= EventMask::ORPHAN.0;
        }
        for (b, w) in out.want.iter_mut().enumerate() {
            *w = out
                .socks
                .iter()
                .filter(|s| s.kind == SocketKind::Stream && s.events >> b & 1 != 0)
                .fold(0, |m, s| m | s.bit);
        }
        Ok(out)
    }

    /// The stream sockets that want an event of `kind` (one event bit; bits of sockets).
    #[inline]
    pub fn wanting(&self, kind: EventMask) -> u32 {
        self.want
            .get(kind.0.trailing_zeros() as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The stream sockets whose SYN filter takes this frame (bits).
    pub fn syn_matches(&self, pkt: &RawPacket<'_>) -> u32 {
        self.socks
            .iter()
            .filter_map(|s| Some((s.bit, s.syn.as_ref()?)))
            .filter(|(_, f)| f.matches(pkt))
            .fold(0, |m, (b, _)| m | b)
    }

    /// The stream sockets that take an orphan frame: those with no orphan filter, and those
    /// whose orphan filter matches (bits). Without the frame, those with no orphan filter.
    pub fn orphan_matches(&self, pkt: Option<&RawPacket<'_>>) -> u32 {
        self.socks
            .iter()
            .filter(|s| s.kind == SocketKind::Stream)
            .filter(|s| match (&s.orphan, pkt) {
                (None, _) => true,
                (Some(f), Some(p)) => f.matches(p),
                (Some(_), None) => false,
            })
            .fold(0, |m, s| m | s.bit)
    }

    /// The raw sockets that take this frame (bits): their raw filter matches, or they have
    /// none.
    pub fn raw_matches(&self, pkt: &RawPacket<'_>) -> u32 {
        self.socks
            .iter()
            .filter(|s| s.kind == SocketKind::Raw)
            .filter(|s| s.raw.as_ref().is_none_or(|f| f.matches(pkt)))
            .fold(0, |m, s| m | s.bit)
    }

    /// Sockets whose SYN filter differs between `self` and `new` (bits): their decisions
    /// must be made again.
    pub fn changed_syn(&self, new: &Sockets) -> u32 {
        let filter_of = |s: &Sockets, bit: u32| {
            s.socks
                .iter()
                .find(|k| k.bit == bit)
                .map(|k| (k.kind, k.syn.clone()))
        };
        (0..MAX_SOCKETS as u32)
            .map(|i| 1u32 << i)
            .filter(|&b| filter_of(self, b) != filter_of(new, b))
            .fold(0, |m, b| m | b)
    }
}

/// What one flow slot's connection is for one analyzer: which sockets' SYN filters took it,
/// and which sockets stopped monitoring it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pick {
    /// The slot's generation the entry is about (+1, so that 0 is "no entry").
    generation: u32,
    /// The table's epoch when the entry was last brought up to date.
    epoch: u32,
    /// Sockets whose SYN filter was run on the flow.
    decided: u32,
    /// Of those, the ones it matched.
    matched: u32,
    /// Sockets that stopped monitoring the flow (`MOS_STOP_MON` on both sides).
    stopped: u32,
}

/// One analyzer's picks, by flow slot. Made when the analyzer first has a SYN filter or
/// stops monitoring a flow; 20 bytes a slot, grown as slots are used (the flow table hands
/// out low slots first), so an analyzer that subscribes costs the worker nothing up front.
///
/// A socket whose filter changes (or that closes) has its decisions forgotten in O(1): the
/// table's epoch moves on and the socket is marked as changed at the new epoch; an entry last
/// brought up to date before that drops the socket's bits when it is next used. An analyzer
/// that resubscribes in a loop costs the worker nothing per flow.
#[derive(Debug, Default)]
pub struct Picks {
    by_slot: Vec<Pick>,
    /// The most slots there are.
    slots: usize,
    epoch: u32,
    /// By socket: the epoch at which its filter last changed.
    changed_at: [u32; 32],
}

impl Picks {
    /// An empty table for `slots` flow slots.
    pub fn new(slots: usize) -> Picks {
        Picks {
            by_slot: Vec::new(),
            slots,
            epoch: 0,
            changed_at: [0; 32],
        }
    }

    /// The sockets (bits) that changed after epoch `since`.
    fn changed_since(&self, since: u32) -> u32 {
        self.changed_at
            .iter()
            .enumerate()
            .filter(|(_, &at)| at > since)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// `e` as it stands now: without the bits of sockets that changed since it was updated.
    fn current(&self, mut e: Pick) -> Pick {
        if e.epoch != self.epoch {
            let stale = self.changed_since(e.epoch);
            e.decided &= !stale;
            e.matched &= !stale;
            e.stopped &= !stale;
            e.epoch = self.epoch;
        }
        e
    }

    fn entry(&mut self, slot: u32, generation: u32) -> Option<&mut Pick> {
        let g = generation.wrapping_add(1);
        let i = slot as usize;
        if i >= self.by_slot.len() {
            if i >= self.slots {
                return None;
            }
            // Doubling: a few reallocations over a run, none per packet once grown.
            let len = (i + 1).next_power_of_two().max(1024).min(self.slots);
            self.by_slot.resize(len, Pick::default());
        }
        let e = self.by_slot[i];
        let fresh = if e.generation != g {
            Pick {
                generation: g,
                epoch: self.epoch,
                ..Pick::default()
            }
        } else {
            self.current(e)
        };
        let at = &mut self.by_slot[slot as usize];
        *at = fresh;
        Some(at)
    }

    /// The stream sockets the flow in `slot` (of `generation`) is for: the unfiltered ones,
    /// those whose SYN filter took it, less those that stopped monitoring it. With a frame,
    /// the filters not yet run on the flow are run on it first. The flag says whether one of
    /// those runs took the flow.
    pub fn socks_of(
        &mut self,
        subs: &Sockets,
        slot: u32,
        generation: u32,
        pkt: Option<&RawPacket<'_>>,
    ) -> (u32, bool) {
        let Some(e) = self.entry(slot, generation) else {
            return (subs.unfiltered, false);
        };
        let undecided = subs.syn_filtered & !e.decided;
        let mut took = false;
        if undecided != 0 {
            if let Some(pkt) = pkt {
                let m = subs.syn_matches(pkt) & undecided;
                e.matched |= m;
                e.decided |= undecided;
                took = m != 0;
            }
        }
        (
            (subs.unfiltered | (e.matched & subs.syn_filtered)) & !e.stopped,
            took,
        )
    }

    /// Whether some stream socket of the analyzer still gets the flow (the sensor then
    /// holds its bytes back for the analyzer in lossless mode). An undecided flow holds
    /// nothing back: the analyzer has had none of its events.
    pub fn holds(&self, subs: &Sockets, slot: u32, generation: u32) -> bool {
        match self.by_slot.get(slot as usize) {
            Some(e) if e.generation == generation.wrapping_add(1) => {
                let e = self.current(*e);
                (subs.unfiltered | (e.matched & subs.syn_filtered)) & !e.stopped != 0
            }
            // A slot the table has not reached has no entry yet.
            _ => subs.unfiltered != 0,
        }
    }

    /// `MOS_STOP_MON` of socket bit `bit` on the flow.
    pub fn stop(&mut self, slot: u32, generation: u32, bit: u32) {
        if let Some(e) = self.entry(slot, generation) {
            e.stopped |= bit;
        }
    }

    /// Forgets the decisions and stops of the sockets in `bits` (their filter changed, or
    /// they closed), in every slot.
    pub fn forget(&mut self, bits: u32) {
        if bits == 0 {
            return;
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // After 2^32 changes: start again from a clean table rather than compare
            // wrapped epochs.
            self.by_slot.iter_mut().for_each(|e| *e = Pick::default());
            self.changed_at = [0; 32];
            return;
        }
        for (i, at) in self.changed_at.iter_mut().enumerate() {
            if bits >> i & 1 != 0 {
                *at = self.epoch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::LinkType;

    /// `ret #k`: accepts (k != 0) or rejects everything.
    fn constant(linktype: u32, k: u32) -> LinkProgram {
        LinkProgram {
            linktype,
            insns: vec![Insn {
                code: 0x06,
                jt: 0,
                jf: 0,
                k,
            }
            .to_u64()],
        }
    }

    fn frame(link: LinkType) -> RawPacket<'static> {
        RawPacket {
            ts_ns: 0,
            link,
            data: &[0u8; 60],
            orig_len: 60,
        }
    }

    #[test]
    fn a_syn_filter_is_run_once_per_flow_and_kept() {
        let subs = Sockets::new(
            false,
            &[
                SocketSub {
                    id: 0,
                    events: EventMask::CONN_NEW_DATA.0,
                    syn: Some(vec![constant(1, 65535)]),
                    ..SocketSub::default()
                },
                SocketSub {
                    id: 1,
                    events: EventMask::CONN_NEW_DATA.0,
                    syn: Some(vec![constant(1, 0)]),
                    ..SocketSub::default()
                },
                SocketSub {
                    id: 5,
                    events: EventMask::CONN_END.0,
                    ..SocketSub::default()
                },
            ],
        )
        .unwrap();
        assert_eq!(subs.syn_filtered, 0b11);
        assert_eq!(subs.unfiltered, 1 << 5);
        let mut picks = Picks::new(4);
        let eth = frame(LinkType::Ethernet);
        // Before a frame: only the unfiltered socket.
        assert_eq!(picks.socks_of(&subs, 2, 7, None).0, 1 << 5);
        assert!(picks.holds(&subs, 2, 7));
        assert_eq!(picks.socks_of(&subs, 2, 7, Some(&eth)).0, 0b1 | 1 << 5);
        // Decided: a later frame does not change it.
        let sll = frame(LinkType::LinuxSll);
        assert_eq!(picks.socks_of(&subs, 2, 7, Some(&sll)).0, 0b1 | 1 << 5);
        // A frame of a link type without a program matches nothing.
        assert_eq!(picks.socks_of(&subs, 3, 0, Some(&sll)).0, 1 << 5);
        // The slot's next connection is decided afresh.
        assert_eq!(picks.socks_of(&subs, 2, 8, Some(&sll)).0, 1 << 5);
        // Stopping: the socket gets nothing more of the flow.
        assert_eq!(picks.socks_of(&subs, 1, 0, Some(&eth)).0, 0b1 | 1 << 5);
        picks.stop(1, 0, 1 << 5);
        picks.stop(1, 0, 0b1);
        assert_eq!(picks.socks_of(&subs, 1, 0, Some(&eth)).0, 0);
        assert!(!picks.holds(&subs, 1, 0));
        // Forgetting socket 0 only: its decision and stop go (it is decided again on the next
        // frame), socket 5's stop stays.
        picks.forget(0b1);
        assert_eq!(picks.socks_of(&subs, 1, 0, None).0, 0);
        assert_eq!(picks.socks_of(&subs, 1, 0, Some(&eth)).0, 0b1);
        picks.forget(u32::MAX);
        assert_eq!(picks.socks_of(&subs, 1, 0, None).0, 1 << 5);
        // Slot 2 was decided before both: decided again on its next frame.
        assert_eq!(picks.socks_of(&subs, 2, 8, None).0, 1 << 5);
        assert_eq!(picks.socks_of(&subs, 2, 8, Some(&eth)).0, 0b1 | 1 << 5);
        // Out of range slots: only what needs no entry.
        assert_eq!(picks.socks_of(&subs, 99, 0, Some(&eth)).0, 1 << 5);
    }

    #[test]
    fn bad_subscriptions_are_refused_with_a_reason() {
        let bad_prog = SocketSub {
            id: 0,
            syn: Some(vec![LinkProgram {
                linktype: 1,
                insns: vec![],
            }]),
            ..SocketSub::default()
        };
        let e = Sockets::new(false, &[bad_prog]).unwrap_err();
        assert!(e.contains("socket 0") && e.contains("SYN filter"), "{e}");
        let e = Sockets::new(
            false,
            &[SocketSub {
                id: 32,
                ..SocketSub::default()
            }],
        )
        .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let twice = SocketSub::default();
        assert!(Sockets::new(false, &[twice.clone(), twice]).is_err());
        let raw = SocketSub {
            id: 1,
            kind: SocketKind::Raw,
            ..SocketSub::default()
        };
        assert!(Sockets::new(false, std::slice::from_ref(&raw)).is_err());
        let ok = Sockets::new(true, &[raw]).unwrap();
        assert_eq!(ok.raw, 0b10);
        assert_eq!(ok.events, EventMask::ORPHAN.0);
        assert_eq!(ok.raw_matches(&frame(LinkType::Raw)), 0b10);
        let e = Sockets::new(false, &vec![SocketSub::default(); 33]).unwrap_err();
        assert!(e.contains("at most 32"), "{e}");
    }

    #[test]
    fn a_changed_filter_is_decided_again_and_others_are_kept() {
        let a = Sockets::new(
            false,
            &[
                SocketSub {
                    id: 0,
                    syn: Some(vec![constant(1, 1)]),
                    ..SocketSub::default()
                },
                SocketSub {
                    id: 1,
                    syn: Some(vec![constant(1, 1)]),
                    ..SocketSub::default()
                },
            ],
        )
        .unwrap();
        let mut b_subs = vec![
            SocketSub {
                id: 0,
                events: 4,
                syn: Some(vec![constant(1, 1)]),
                ..SocketSub::default()
            },
            SocketSub {
                id: 1,
                syn: Some(vec![constant(1, 0)]),
                ..SocketSub::default()
            },
        ];
        let b = Sockets::new(false, &b_subs).unwrap();
        // Only socket 1's filter changed (socket 0's events did, which keeps its picks).
        assert_eq!(a.changed_syn(&b), 0b10);
        b_subs.pop();
        let c = Sockets::new(false, &b_subs).unwrap();
        assert_eq!(b.changed_syn(&c), 0b10);
    }
}
