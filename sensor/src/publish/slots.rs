//! Flow slots: each connection's state, published under its slot's seqlock, with its stream
//! buffers' metadata.

use crate::event::EndReason;
use crate::parse::{Tunnel, TunnelId};
use crate::tcp::conn::Conn;
use crate::tcp::ring_pool::{GapKind, RingId, RingPool};
use crate::tracker::SlotSink;
use core::mem::offset_of;
use shm_layout::layout::{
    flow_flags, gap_kind, side_flags, tunnel_flags, tunnel_id, FlowData, FlowSlot, FragRec, GapRec,
    RingMeta, RingMetaSlot, SideData, TunnelData, TunnelSlot, MAX_FRAGMENTS, MAX_GAPS, NO_PKT,
    NO_RING,
};
use shm_layout::{Side, Words};
use std::net::IpAddr;
use std::sync::atomic::Ordering;

/// Word index of side `i`'s field at byte offset `field` within [`SideData`].
const fn side_word(i: usize, field: usize) -> usize {
    (offset_of!(FlowData, sides) + i * core::mem::size_of::<SideData>() + field) / 8
}

/// Word of [`FlowData::port`] (with `end_reason`).
const PORT_WORD: usize = offset_of!(FlowData, port) / 8;
/// Word of [`FlowData::last_ns`].
const LAST_NS_WORD: usize = offset_of!(FlowData, last_ns) / 8;
// `publish` reads the previous generation and flags from the slot's first word.
const _: () = assert!(offset_of!(FlowData, generation) == 0 && offset_of!(FlowData, flags) == 4);

/// Writes one worker's flow slots and ring metadata.
#[derive(Debug)]
pub struct SlotPublisher {
    slots: &'static [FlowSlot],
    metas: &'static [RingMetaSlot],
    tunnels: &'static [TunnelSlot],
    /// The slot whose write section is open, if any.
    open: Option<u32>,
    /// Packet-log sequence of the frame being processed ([`NO_PKT`] when not logged).
    pkt_ref: u64,
}

impl SlotPublisher {
    /// A publisher over a worker's slots, their tunnel records (one per slot, or none) and
    /// stream buffers' metadata (one [`RingMetaSlot`] per buffer).
    pub fn new(
        slots: &'static [FlowSlot],
        metas: &'static [RingMetaSlot],
        tunnels: &'static [TunnelSlot],
    ) -> Self {
        SlotPublisher {
            slots,
            metas,
            tunnels,
            open: None,
            pkt_ref: NO_PKT,
        }
    }

    /// Slots published.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            self.slots[o as usize].stamp.end_write();
        }
    }
}

/// The tracker's view of the publisher: see [`SlotSink`]'s methods.
impl SlotSink for SlotPublisher {
    #[inline]
    fn begin(&mut self, slot: u32) {
        if self.open == Some(slot) {
            return;
        }
        self.close();
        if let Some(s) = self.slots.get(slot as usize) {
            s.stamp.begin_write();
            self.open = Some(slot);
        }
    }

    fn publish(
        &mut self,
        slot: u32,
        generation: u32,
        conn: &Conn,
        tunnel: Option<&Tunnel>,
        pool: &mut RingPool,
        received_by: Option<Side>,
    ) {
        let Some(s) = self.slots.get(slot as usize) else {
            return;
        };
        if self.open != Some(slot) {
            self.close();
            s.stamp.begin_write();
            self.open = Some(slot);
        }
        let prev0 = s.words[0].load(Ordering::Relaxed);
        let same_flow = prev0 as u32 == generation && (prev0 >> 32) as u32 & flow_flags::LIVE != 0;
        let mut d = FlowData {
            generation,
            flags: flow_flags::LIVE,
            last_ns: conn.last_ns,
            ..Default::default()
        };
        if conn.guessed {
            d.flags |= flow_flags::GUESSED;
        }
        if conn.closed.is_some() {
            d.flags |= flow_flags::CLOSED;
        }
        if conn.ended {
            d.flags |= flow_flags::ENDED;
        }
        let tunnel = tunnel.zip(self.tunnels.get(slot as usize));
        if tunnel.is_some() {
            d.flags |= flow_flags::TUNNEL;
        }
        d.end_reason = conn.closed.map_or(0, |r: EndReason| r as u8);
        for (i, e) in conn.endpoints.iter().enumerate() {
            d.port[i] = e.port;
            if e.addr.is_ipv6() {
                d.flags |= flow_flags::IPV6;
            }
        }
        if !same_flow {
            // First publication for this connection: the parts that never change too.
            d.serial = conn.serial;
            d.start_ns = conn.start_ns;
            for (i, e) in conn.endpoints.iter().enumerate() {
                match e.addr {
                    IpAddr::V4(a) => d.addr[i][..4].copy_from_slice(&a.octets()),
                    IpAddr::V6(a) => d.addr[i] = a.octets(),
                }
            }
            if let Some((t, ts)) = tunnel {
                tunnel_data(t).store(&ts.words);
            }
        }
        for side in [Side::Cli, Side::Svr] {
            let i = side.index();
            let st = conn.stack(side);
            let r = &st.recv;
            let sd = &mut d.sides[i];
            sd.head = r.head();
            sd.tail = r.tail();
            sd.lost = r.lost();
            sd.packets = u32::try_from(st.packets).unwrap_or(u32::MAX);
            sd.state = st.state.code();
            sd.ring = r.ring_index().unwrap_or(NO_RING);
            if r.is_anchored() {
                sd.flags |= side_flags::ANCHORED;
                sd.base_seq = r.offset_to_seq(0);
            }
            if let Some(isn) = st.isn {
                sd.flags |= side_flags::HAS_ISN;
                sd.isn = isn;
            }
            if let Some(fin) = st.fin_seq {
                sd.flags |= side_flags::HAS_FIN;
                sd.fin_seq = fin;
            }
            sd.last_pkt = if received_by == Some(side) {
                self.pkt_ref
            } else if same_flow {
                // The previous value, which this worker wrote itself.
                s.words[side_word(i, offset_of!(SideData, last_pkt))].load(Ordering::Relaxed)
            } else {
                NO_PKT
            };
            // The ring's fragments and gaps, when they changed since they were last written
            // (in order, in-window data changes neither).
            if sd.ring != NO_RING && pool.take_meta_changed(RingId(sd.ring)) {
                if let Some(m) = self.metas.get(sd.ring as usize) {
                    ring_meta(pool, RingId(sd.ring)).store_prefix(&m.words);
                }
            }
        }
        if same_flow {
            // Only the words that change after creation: flags, ports and end reason,
            // last_ns, and both sides.
            for i in [0, PORT_WORD, LAST_NS_WORD] {
                s.words[i].store(d.word(i), Ordering::Relaxed);
            }
            let first = side_word(0, 0);
            for (i, dst) in s.words.iter().enumerate().skip(first) {
                dst.store(d.word(i), Ordering::Relaxed);
            }
        } else {
            d.store(&s.words);
        }
        self.close();
    }

    fn free(&mut self, slot: u32, new_generation: u32) {
        let Some(s) = self.slots.get(slot as usize) else {
            return;
        };
        if self.open != Some(slot) {
            self.close();
            s.stamp.begin_write();
        }
        let d = FlowData {
            generation: new_generation,
            ..Default::default()
        };
        d.store(&s.words);
        s.stamp.end_write();
        self.open = None;
    }

    fn set_pkt_ref(&mut self, pkt_ref: u64) {
        self.pkt_ref = pkt_ref;
    }
}

/// A tunnel description in its published form.
pub fn tunnel_data(t: &Tunnel) -> TunnelData {
    let mut d = TunnelData {
        kinds: t.kinds,
        depth: t.depth,
        ..Default::default()
    };
    if let Some(outer) = t.outer {
        d.flags |= tunnel_flags::OUTER;
        for (i, a) in outer.iter().enumerate() {
            match a {
                IpAddr::V4(a) => d.outer[i][..4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => {
                    d.flags |= tunnel_flags::OUTER_IPV6;
                    d.outer[i] = a.octets();
                }
            }
        }
    }
    (d.id_kind, d.id) = match t.id {
        None => (tunnel_id::NONE, 0),
        Some(TunnelId::GreKey(k)) => (tunnel_id::GRE_KEY, k),
        Some(TunnelId::ErspanSession(s)) => (tunnel_id::ERSPAN_SESSION, u32::from(s)),
        Some(TunnelId::VxlanVni(v)) => (tunnel_id::VXLAN_VNI, v),
        Some(TunnelId::GtpTeid(t)) => (tunnel_id::GTP_TEID, t),
        Some(TunnelId::MplsLabel(l)) => (tunnel_id::MPLS_LABEL, l),
    };
    d
}

/// A ring's metadata in its published form.
fn ring_meta(pool: &RingPool, id: RingId) -> RingMeta {
    let meta = pool.meta(id);
    let mut m = RingMeta {
        unknown_below: meta.unknown_below(),
        ..Default::default()
    };
    for (i, f) in meta.fragments().iter().take(MAX_FRAGMENTS).enumerate() {
        m.frags[i] = FragRec {
            start: f.start,
            len: f.len,
            _pad: 0,
        };
        m.nfrags += 1;
    }
    for (i, g) in meta.gaps().take(MAX_GAPS).enumerate() {
        m.gaps[i] = GapRec {
            offset: g.offset,
            len: g.len,
            kind: match g.kind {
                GapKind::Missed => gap_kind::MISSED,
                GapKind::Snap => gap_kind::SNAP,
                GapKind::Overflow => gap_kind::OVERFLOW,
            },
        };
        m.ngaps += 1;
    }
    m
}
