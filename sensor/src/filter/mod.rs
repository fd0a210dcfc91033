//! Filters analyzers bind to their sockets, run by the sensor.
//!
//! An analyzer sends a classic BPF program (what `pcap_compile` produces from a tcpdump
//! expression); the sensor checks it once with [`Program::new`] and then runs it with
//! [`Program::run`] on the first frame of each new connection, to decide whether that analyzer
//! sees the connection. Analyzers are not trusted, so every program is treated as hostile
//! input: see [`bpf`] for what is refused and why the interpreter cannot panic, loop or read
//! outside the frame.

pub mod bpf;

pub use bpf::{Insn, Invalid, Program, MAX_INSNS};
