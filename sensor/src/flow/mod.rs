//! The flow table: connections keyed by their canonical 5-tuple, client and server roles,
//! idle timeouts and eviction.
