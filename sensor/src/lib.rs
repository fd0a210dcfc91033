//! The mos sensor as a library: each module is one step of the data path, in the order a packet
//! takes them.
//!
//! `capture` (files; DPDK ports and AF_PACKET rings come through `live`, with the `mos-dpdk`
//! and `mos-afpacket` crates) -> `dispatch` (a symmetric flow hash picks each frame's worker)
//! -> `parse` (link, IP and TCP views) -> `defrag` (IP fragments reassembled) -> `flow`
//! (the flow table, client/server roles, timeouts, eviction) -> `tcp` (both endpoints' state
//! machines and the reassembly of each side's receive stream) -> `publish` (the shared memory
//! analyzers read: flow slots, rings, the packet log, event rings) and `control` (the socket
//! where analyzers attach and detach). `output` is the in-process stream dump (`--dump`), and
//! `cli` the command line of the `mos-sensor` binary.
//!
//! The TCP core (`flow` and `tcp`) does no I/O and reads no clock: time and packets go in,
//! events come out, so every capture backend feeds the same core and tests are deterministic.

#![deny(unsafe_code)]

pub mod budget;
pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod defrag;
pub mod dispatch;
pub mod event;
pub mod filter;
pub mod flow;
pub mod live;
pub mod output;
pub mod parse;
pub mod publish;
pub mod replay;
pub mod service;
pub mod tcp;
pub mod tracker;
