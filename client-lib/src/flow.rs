//! Flow handles and what a flow slot says about its connection.

use crate::event::EndReason;
use shm_layout::layout::{flow_flags, side_flags, FlowData, SideData, TunnelData};
use shm_layout::{Side, TcpState};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A connection as an analyzer names it: the worker that owns it, its flow slot, and the
/// slot's generation, which changes whenever the slot is given to another connection. A handle
/// whose generation no longer matches is stale: every call with it fails with `EBADF` rather
/// than read another connection's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    /// The worker.
    pub worker: u16,
    /// The slot in the worker's flow table.
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
}

/// Hashes [`FlowId`]s for the per-socket maps of user contexts and stopped sides (the read
/// pointers, which every event and `peek` consult, are in a [`SlotMap`]). Std's SipHash
/// guards against keys an attacker picks; flow handles are slot numbers the sensor hands out,
/// so a multiply-and-rotate mix (FxHash's) is enough and several times cheaper.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FlowIdHash;

impl std::hash::BuildHasher for FlowIdHash {
    type Hasher = FlowIdHasher;
    #[inline]
    fn build_hasher(&self) -> FlowIdHasher {
        FlowIdHasher(0)
    }
}

/// The hasher [`FlowIdHash`] builds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlowIdHasher(u64);

impl FlowIdHasher {
    #[inline]
    fn mix(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FlowIdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.mix(u64::from(*b));
        }
    }
    #[inline]
    fn write_u16(&mut self, x: u16) {
        self.mix(u64::from(x));
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.mix(u64::from(x));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.mix(x);
    }
}

/// A map keyed by flow handle.
pub(crate) type FlowMap<V> = std::collections::HashMap<FlowId, V, FlowIdHash>;

/// Per-flow values kept by slot: a vector per worker indexed by slot number, each entry
/// tagged with the generation it belongs to. A lookup is an index and a compare, with no
/// hashing, for the per-socket read pointers that every event and every `peek` consults.
///
/// A slot holds one flow at a time, and so does each entry: a value stored for a newer
/// generation of a slot replaces the older one's (whose handle is stale by then: every call
/// with it fails with `EBADF`). Entries are made only for handles the caller checked against
/// the slot table, so the vectors grow no further than the highest slot in use.
#[derive(Clone, Debug)]
pub(crate) struct SlotMap<V> {
    workers: Vec<Vec<SlotEntry<V>>>,
    len: usize,
}

#[derive(Clone, Debug, Default)]
struct SlotEntry<V> {
    generation: u32,
    /// Whether `value` belongs to `generation` (else the entry is empty).
    held: bool,
    value: V,
}

impl<V> Default for SlotMap<V> {
    fn default() -> Self {
        SlotMap {
            workers: Vec::new(),
            len: 0,
        }
    }
}

impl<V: Default> SlotMap<V> {
    #[inline]
    fn entry_of(&self, flow: FlowId) -> Option<&SlotEntry<V>> {
        self.workers
            .get(usize::from(flow.worker))?
            .get(flow.slot as usize)
            .filter(|e| e.held && e.generation == flow.generation)
    }

    /// The value kept for `flow`, if any.
    #[inline]
    pub fn get(&self, flow: FlowId) -> Option<&V> {
        self.entry_of(flow).map(|e| &e.value)
    }

    /// Whether a value is kept for `flow`.
    #[inline]
    pub fn contains(&self, flow: FlowId) -> bool {
        self.entry_of(flow).is_some()
    }

    /// The value kept for `flow`, made with `V::default()` if there is none (replacing what an
    /// older generation of the slot kept).
    #[inline]
    pub fn get_or_default(&mut self, flow: FlowId) -> &mut V {
        let w = usize::from(flow.worker);
        let slot = flow.slot as usize;
        // The common case, a value already kept: one lookup, no growth to consider.
        if self.entry_of(flow).is_some() {
            return &mut self.workers[w][slot].value;
        }
        if self.workers.len() <= w {
            self.workers.resize_with(w + 1, Vec::new);
        }
        let slots = &mut self.workers[w];
        if slots.len() <= slot {
            slots.resize_with(slot + 1, SlotEntry::default);
        }
        let e = &mut slots[slot];
        if !(e.held && e.generation == flow.generation) {
            if !e.held {
                self.len += 1;
            }
            *e = SlotEntry {
                generation: flow.generation,
                held: true,
                value: V::default(),
            };
        }
        &mut e.value
    }

    /// Keeps `value` for `flow` (replacing what was kept for the slot).
    #[inline]
    pub fn insert(&mut self, flow: FlowId, value: V) {
        *self.get_or_default(flow) = value;
    }

    /// Drops what is kept for `flow` (nothing for another generation of its slot).
    pub fn remove(&mut self, flow: FlowId) {
        let e = self
            .workers
            .get_mut(usize::from(flow.worker))
            .and_then(|w| w.get_mut(flow.slot as usize));
        if let Some(e) = e.filter(|e| e.held && e.generation == flow.generation) {
            *e = SlotEntry::default();
            self.len -= 1;
        }
    }

    /// The flows with a value kept.
    pub fn keys(&self) -> impl Iterator<Item = FlowId> + '_ {
        self.workers.iter().enumerate().flat_map(|(w, slots)| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, e)| e.held)
                .map(move |(s, e)| FlowId {
                    worker: w as u16,
                    slot: s as u32,
                    generation: e.generation,
                })
        })
    }

    /// How many flows have a value kept.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl fmt::Display for FlowId {
    /// `worker/slot/generation`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.worker, self.slot, self.generation)
    }
}

/// One side of a connection as its slot says (a copy; the connection moves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideInfo {
    /// The emulated stack's state (`None` for a code out of range).
    pub state: Option<TcpState>,
    /// This endpoint's initial sequence number, when its SYN (or SYN/ACK) was seen.
    pub isn: Option<u32>,
    /// Oldest stream offset still in the side's ring.
    pub head: u64,
    /// One past the last in-order byte of the side's receive stream.
    pub tail: u64,
    /// Bytes the stream skipped without holding them.
    pub lost: u64,
    /// Packets this endpoint sent (the sensor stops counting at `u32::MAX`).
    pub packets: u64,
}

impl SideInfo {
    fn from_data(s: &SideData) -> SideInfo {
        SideInfo {
            state: TcpState::from_code(s.state),
            isn: (s.flags & side_flags::HAS_ISN != 0).then_some(s.isn),
            head: s.head,
            tail: s.tail,
            lost: s.lost,
            packets: u64::from(s.packets),
        }
    }
}

/// A connection as its slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowInfo {
    /// The handle.
    pub id: FlowId,
    /// Creation order of the connection within its worker.
    pub serial: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// Roles guessed (no handshake seen).
    pub guessed: bool,
    /// Both stacks are done; the connection lingers before `CONN_END`.
    pub closed: bool,
    /// `CONN_END` was raised.
    pub ended: bool,
    /// Why it ended, once it did.
    pub end_reason: Option<EndReason>,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: u64,
    /// Time of the latest packet.
    pub last_ns: u64,
    /// `[client side, server side]`, indexed by [`Side::index`].
    pub sides: [SideInfo; 2],
    /// The tunnel the connection's first packet came through (`None`: none, or a sensor that
    /// does not publish tunnels). Filled by [`crate::Ctx::flow_info`].
    pub tunnel: Option<TunnelData>,
}

impl FlowInfo {
    pub(crate) fn from_data(id: FlowId, d: &FlowData) -> FlowInfo {
        let [client, server] = endpoints(d);
        FlowInfo {
            id,
            serial: d.serial,
            client,
            server,
            guessed: d.flags & flow_flags::GUESSED != 0,
            closed: d.flags & flow_flags::CLOSED != 0,
            ended: d.flags & flow_flags::ENDED != 0,
            end_reason: (d.end_reason != 0).then(|| EndReason::from_code(d.end_reason)),
            start_ns: d.start_ns,
            last_ns: d.last_ns,
            sides: [
                SideInfo::from_data(&d.sides[0]),
                SideInfo::from_data(&d.sides[1]),
            ],
            tunnel: None,
        }
    }

    /// One side.
    pub fn side(&self, side: Side) -> &SideInfo {
        &self.sides[side.index()]
    }
}

/// The client's and the server's addresses of a slot.
pub(crate) fn endpoints(d: &FlowData) -> [SocketAddr; 2] {
    let v6 = d.flags & flow_flags::IPV6 != 0;
    [0, 1].map(|i| {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(d.addr[i]))
        } else {
            let a = &d.addr[i];
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        };
        SocketAddr::new(ip, d.port[i])
    })
}

#[cfg(test)]
mod slot_map_tests {
    use super::{FlowId, SlotMap};

    fn id(worker: u16, slot: u32, generation: u32) -> FlowId {
        FlowId {
            worker,
            slot,
            generation,
        }
    }

    #[test]
    fn values_are_kept_per_worker_slot_and_generation() {
        let mut m: SlotMap<[Option<u64>; 2]> = SlotMap::default();
        assert_eq!(m.len(), 0);
        assert!(m.get(id(0, 5, 1)).is_none());
        m.get_or_default(id(0, 5, 1))[1] = Some(7);
        m.insert(id(2, 0, 9), [Some(1), None]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(id(0, 5, 1)), Some(&[None, Some(7)]));
        assert_eq!(m.get(id(2, 0, 9)), Some(&[Some(1), None]));
        // Another worker, slot or generation is another flow.
        assert!(m.get(id(1, 5, 1)).is_none());
        assert!(m.get(id(0, 4, 1)).is_none());
        assert!(!m.contains(id(0, 5, 2)));
        assert!(m.contains(id(0, 5, 1)));
        let mut keys: Vec<FlowId> = m.keys().collect();
        keys.sort();
        assert_eq!(keys, vec![id(0, 5, 1), id(2, 0, 9)]);
    }

    #[test]
    fn a_newer_generation_replaces_the_older_and_remove_takes_only_its_own() {
        let mut m: SlotMap<[Option<u64>; 2]> = SlotMap::default();
        m.insert(id(0, 3, 1), [Some(10), Some(20)]);
        // The slot's next connection starts empty, and the stale handle finds nothing.
        assert_eq!(m.get_or_default(id(0, 3, 2)), &mut [None, None]);
        assert!(m.get(id(0, 3, 1)).is_none());
        assert_eq!(m.len(), 1);
        // Removing with the stale handle leaves the newer flow's value.
        m.remove(id(0, 3, 1));
        assert!(m.contains(id(0, 3, 2)));
        m.remove(id(0, 3, 2));
        assert_eq!(m.len(), 0);
        assert!(m.keys().next().is_none());
        // Removing what is not there, even past the end, changes nothing.
        m.remove(id(7, 1_000, 1));
        assert_eq!(m.len(), 0);
    }
}
