//! User-defined events (`mtcp_define_event`, `mtcp_alloc_event`, `mtcp_raise_event`): events
//! this library raises on top of the sensor's, in the analyzer's process.
//!
//! An event id is one bit of an [`EventMask`], as in mOS's `event_t`: bits 0 to 10 are the
//! built-in events, and user-defined events take the bits above, in the order they are made
//! (53 of them at most per attachment). A *defined* event has a base event (built-in or
//! user-defined) and a filter: when the base fires on a socket, the filter runs, and the event
//! fires if it returns true. An *allocated* event has a parent and no filter: it fires only
//! when a filter or callback raises it ([`crate::Ctx::raise_event`]) while its parent's event
//! is being handled. Either kind is registered on exactly like a built-in event; each fires
//! its own callbacks, then the events based on it, so chains work to any depth.

use crate::ctx::Ctx;
use crate::error::{Errno, Error, Result};
use crate::event::Event;
use shm_layout::EventMask;

/// A user-defined event's filter: the context and the base event's occurrence; true raises
/// the event. What mOS passes as `struct filter_arg` is whatever the closure captures.
pub type EventFilter = Box<dyn FnMut(&mut Ctx<'_>, &Event) -> bool>;

/// The first bit user-defined events take.
pub const FIRST_USER_BIT: u32 = 11;
/// User-defined events one attachment may make.
pub const MAX_USER_EVENTS: usize = 64 - FIRST_USER_BIT as usize;
/// Every built-in event bit.
const BUILT_IN: u64 = (1 << FIRST_USER_BIT) - 1;
/// Raises one event occurrence may cause on one socket (with its chains): a callback that
/// raises the event it is called for stops here instead of looping.
pub const MAX_RAISES: usize = 256;

pub(crate) struct UserEvent {
    pub id: EventMask,
    /// The event it is based on (defined) or raised under (allocated).
    pub base: EventMask,
    /// The built-in event at the root of its chain: what the sensor is asked for.
    pub root: EventMask,
    /// `None` for an allocated event.
    pub filter: Option<EventFilter>,
}

impl std::fmt::Debug for UserEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEvent")
            .field("id", &self.id)
            .field("base", &self.base)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// The attachment's user-defined events, by bit.
#[derive(Debug, Default)]
pub(crate) struct UserEvents {
    pub list: Vec<UserEvent>,
}

/// Whether `e` is exactly one bit.
fn single(e: EventMask) -> bool {
    e.0.count_ones() == 1
}

impl UserEvents {
    /// The event of bit `id`, if it is a user-defined one.
    pub fn get(&self, id: EventMask) -> Option<&UserEvent> {
        if !single(id) || id.0 & BUILT_IN != 0 {
            return None;
        }
        self.list
            .get((id.0.trailing_zeros() - FIRST_USER_BIT) as usize)
    }

    /// Whether `id` is a built-in event or one made here.
    pub fn exists(&self, id: EventMask) -> bool {
        single(id) && (id.0 & BUILT_IN & EventMask::ALL.0 != 0 || self.get(id).is_some())
    }

    fn add(&mut self, base: EventMask, filter: Option<EventFilter>) -> Result<EventMask> {
        if !self.exists(base) {
            return Err(Error::new(
                Errno::EINVAL,
                format!(
                    "{:#x} is not one event (a built-in one, or one made by define_event or alloc_event)",
                    base.0
                ),
            ));
        }
        if self.list.len() >= MAX_USER_EVENTS {
            return Err(Error::new(
                Errno::ENOMEM,
                format!("an attachment makes at most {MAX_USER_EVENTS} user-defined events"),
            ));
        }
        let id = EventMask(1 << (FIRST_USER_BIT + self.list.len() as u32));
        let root = self.root(base);
        self.list.push(UserEvent {
            id,
            base,
            root,
            filter,
        });
        Ok(id)
    }

    /// `mtcp_define_event`.
    pub fn define(&mut self, base: EventMask, filter: EventFilter) -> Result<EventMask> {
        self.add(base, Some(filter))
    }

    /// `mtcp_alloc_event`.
    pub fn alloc(&mut self, parent: EventMask) -> Result<EventMask> {
        self.add(parent, None)
    }

    /// The built-in events under every bit of `mask` (user-defined bits replaced by their
    /// chain's root).
    pub fn roots(&self, mask: EventMask) -> EventMask {
        let mut out = mask.0 & BUILT_IN;
        for u in &self.list {
            if mask.0 & u.id.0 != 0 {
                out |= u.root.0;
            }
        }
        EventMask(out)
    }

    fn root(&self, e: EventMask) -> EventMask {
        match self.get(e) {
            Some(u) => u.root,
            None => e,
        }
    }

    /// Every user-defined event whose chain leads down to one of `mask`'s bits (the bits
    /// themselves included): those a socket wanting `mask` needs raised.
    pub fn needed_for(&self, mask: EventMask) -> u64 {
        // Bases come before what is built on them, so one pass from the newest down finds
        // every ancestor.
        let mut need = mask.0;
        for u in self.list.iter().rev() {
            if need & u.id.0 != 0 {
                need |= u.base.0;
            }
        }
        need
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_take_the_bits_above_the_built_in_ones_and_chain_to_their_root() {
        let mut u = UserEvents::default();
        let a = u
            .define(EventMask::CONN_NEW_DATA, Box::new(|_, _| true))
            .unwrap();
        assert_eq!(a, EventMask(1 << 11));
        let b = u.define(a, Box::new(|_, _| false)).unwrap();
        let c = u.alloc(b).unwrap();
        assert_eq!(c, EventMask(1 << 13));
        assert_eq!(u.roots(c), EventMask::CONN_NEW_DATA);
        assert_eq!(
            u.roots(EventMask(c.0 | EventMask::CONN_END.0)),
            EventMask(EventMask::CONN_NEW_DATA.0 | EventMask::CONN_END.0)
        );
        assert_eq!(
            u.needed_for(c),
            c.0 | b.0 | a.0 | EventMask::CONN_NEW_DATA.0
        );
        assert!(u.get(c).unwrap().filter.is_none());
        // Not one event, or not made here.
        assert!(u.define(EventMask(3), Box::new(|_, _| true)).is_err());
        assert!(u.alloc(EventMask(1 << 40)).is_err());
        assert!(u.alloc(EventMask(0)).is_err());
        // The limit.
        while u.list.len() < MAX_USER_EVENTS {
            u.alloc(EventMask::CONN_END).unwrap();
        }
        assert_eq!(
            u.alloc(EventMask::CONN_END).unwrap_err().errno(),
            Errno::ENOMEM
        );
        assert_eq!(u.list.last().unwrap().id, EventMask(1 << 63));
    }
}
