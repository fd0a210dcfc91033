//! The flow table: connections keyed by their canonical 5-tuple, with the recency order that
//! idle timeouts and eviction read.

pub mod key;
pub mod table;
pub mod tunnels;

pub use key::{Endpoint, FlowKey, HashKeys};
pub use table::FlowTable;
pub use tunnels::TunnelTable;
