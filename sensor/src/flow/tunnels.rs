//! The tunnel each connection's first packet came through, beside the flow table.
//!
//! Most traffic crosses no tunnel, and a tunnel description (outer addresses included) is
//! about 50 bytes, which would break the 512-byte budget of an idle connection if every
//! connection carried one. So descriptions live in a table indexed by flow slot that grows
//! only as far as the highest slot a tunnelled connection took: plain traffic costs nothing,
//! tunnelled traffic costs one entry per slot. Growth is amortized (a reusable buffer, at most
//! one entry per flow slot), so the packet path allocates nothing in the steady state.

use crate::parse::Tunnel;

/// Tunnel descriptions by flow slot.
#[derive(Debug, Default)]
pub struct TunnelTable {
    by_slot: Vec<Tunnel>,
}

impl TunnelTable {
    /// Records the tunnel of the connection that now holds `slot` (none clears the entry a
    /// previous holder left).
    pub fn set(&mut self, slot: u32, tunnel: &Tunnel) {
        let i = slot as usize;
        if let Some(e) = self.by_slot.get_mut(i) {
            *e = *tunnel;
        } else if !tunnel.is_none() {
            self.by_slot.resize(i + 1, Tunnel::default());
            self.by_slot[i] = *tunnel;
        }
    }

    /// The tunnel of the connection holding `slot`, if it came through one.
    pub fn get(&self, slot: u32) -> Option<&Tunnel> {
        self.by_slot.get(slot as usize).filter(|t| !t.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::tunnel::kind;

    #[test]
    fn grows_for_tunnels_only_and_clears_on_reuse() {
        let mut t = TunnelTable::default();
        t.set(5, &Tunnel::default());
        assert!(t.by_slot.is_empty(), "plain connections cost nothing");
        let gre = Tunnel {
            kinds: kind::GRE,
            depth: 1,
            ..Tunnel::default()
        };
        t.set(3, &gre);
        assert_eq!(t.by_slot.len(), 4);
        assert_eq!(t.get(3), Some(&gre));
        assert_eq!(t.get(2), None);
        assert_eq!(t.get(9), None);
        t.set(3, &Tunnel::default());
        assert_eq!(t.get(3), None, "a new holder without a tunnel");
    }
}
