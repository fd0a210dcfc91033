//! The analyzer library: attach to a running `mos-sensor` and read the connections it follows
//! through mOS's monitoring API.
//!
//! | mOS | here |
//! |---|---|
//! | `mtcp_init`, `mtcp_create_context` | [`Mos::attach`] ([`AttachOptions`]) |
//! | `mtcp_socket(MOS_SOCK_MONITOR_STREAM)` | [`Mos::socket`] |
//! | `mtcp_socket(MOS_SOCK_MONITOR_RAW)` | [`Mos::raw_socket`] (its packets: [`Ctx::event_packet`]) |
//! | `mtcp_bind_monitor_filter` | [`Mos::bind_monitor_filter`] ([`MonitorFilter`]) |
//! | `mtcp_register_callback` (and with a null callback) | [`Mos::register_callback`], [`Mos::register_filtered`], [`Mos::unregister_callback`] |
//! | the same on a per-flow socket | [`Ctx::register_flow_callback`], [`Ctx::unregister_flow_callback`] |
//! | `mtcp_define_event` | [`Mos::define_event`] |
//! | `mtcp_alloc_event` | [`Mos::alloc_event`] |
//! | `mtcp_raise_event` | [`Ctx::raise_event`] |
//! | `mtcp_settimer` | [`Mos::settimer`], [`Ctx::settimer`] (on a [`TimerClock`]) |
//! | `mtcp_set_uctx`, `mtcp_get_uctx` | [`Ctx::set_uctx`], [`Ctx::uctx`], [`Ctx::take_uctx`] |
//! | `mtcp_setsockopt(MOS_STOP_MON)` | [`Ctx::stop_monitoring`] |
//! | `mtcp_getconf` | [`Mos::getconf`] ([`Conf`]) |
//! | the context's event loop | [`Mos::run`], [`Mos::run_for`], [`Mos::poll`] with [`Mos::wait`] |
//! | `mtcp_peek` | [`Ctx::peek`] (inside a callback, up to the event), [`Ctx::peek_newest`] |
//! | `mtcp_ppeek` | [`Ctx::ppeek`] |
//! | `mtcp_getsockopt` (`SOL_MONSOCKET`) | [`Ctx::getsockopt`] |
//! | `mtcp_setsockopt(MOS_CLIOVERLAP/SVROVERLAP)` | [`Ctx::set_overlap_policy`] |
//! | `mtcp_getlastpkt` | [`Ctx::getlastpkt`] |
//! | `mtcp_getpeername` | [`Ctx::getpeername`] |
//! | `mtcp_close` | [`Mos::close`] |
//!
//! Everything the sensor publishes is read by copying and re-validating, never by reference:
//! a stale flow handle gives `EBADF`, a torn or overwritten read is reported (an overrun,
//! `ENODATA`), never returned as data. The shared regions are mapped read-only from read-only
//! descriptors, so this process cannot write them even by mistake. `docs/CLIENT.md` describes
//! the API at more length, and `docs/ANALYZERS.md` walks from an empty cargo project to a
//! running analyzer (with three example analyzers in `analyzers/examples/`).
//!
//! A whole analyzer: the requests of port-80 connections, as the client sent them.
//!
//! ```no_run
//! use mos_client::{AttachOptions, EventMask, Hook, MonitorFilter, Mos, Peek, Side};
//! use std::time::Duration;
//!
//! fn main() -> mos_client::Result<()> {
//!     let mut mos = Mos::attach(&AttachOptions {
//!         control: "/tmp/mos.sock".into(),
//!         name: "requests".into(),
//!         wait: Duration::from_secs(10),
//!         ..AttachOptions::default()
//!     })?;
//!     let sock = mos.socket()?;
//!     // Run by the sensor on each connection's first packet.
//!     mos.bind_monitor_filter(
//!         sock,
//!         &MonitorFilter {
//!             stream_syn_filter: Some("tcp port 80"),
//!             ..MonitorFilter::default()
//!         },
//!     )?;
//!     mos.register_callback(sock, EventMask::CONN_NEW_DATA, Hook::Null, move |ctx, ev| {
//!         // The server's stream holds what the client sent.
//!         let (Some(flow), Some(Side::Svr)) = (ev.flow, ev.side) else {
//!             return;
//!         };
//!         let mut buf = [0u8; 4096];
//!         // Up to what this event brought.
//!         while let Ok(Peek::Data(n)) = ctx.peek(sock, flow, Side::Svr, &mut buf) {
//!             print!("{}", String::from_utf8_lossy(&buf[..n]));
//!         }
//!     })?;
//!     mos.run()?;
//!     Ok(())
//! }
//! ```
//!
//! [`dump`] holds the stream-dump writer that `mos-sensor --dump` and the `mos-dump` analyzer
//! share, so both write the same bytes.

#![forbid(unsafe_code)]

mod control;
mod ctx;
pub mod dump;
mod error;
mod event;
mod filter;
mod flow;
mod lookahead;
mod mos;
mod packet;
mod regions;
mod sockopt;
mod stream;
mod timer;
mod user_event;
mod views;
mod watch;

#[cfg(test)]
mod api_tests;
#[cfg(any(test, feature = "fake-sensor"))]
pub mod fake_sensor;
#[cfg(test)]
mod model_tests;

pub use ctx::{Counters, Ctx, Peek, SockId};
pub use error::{Errno, Error, Result};
pub use event::{EndReason, ErrorKind, Event, EventKind};
pub use filter::MonitorFilter;
pub use flow::{FlowId, FlowInfo, SideInfo};
pub use mos::{
    share_mask, AttachOptions, Callback, Conf, Filter, Mos, ReportHandle, RunEnd, StopHandle,
    DEFAULT_CONTROL,
};
pub use packet::{ip_offset, Packet};
pub use shm_layout::control::SocketKind;
pub use shm_layout::region::WriteProbe;
pub use shm_layout::{EventMask, Hook, Side, TcpState, MOS_SIDE_BOTH};
pub use timer::{TimerCallback, TimerClock};
pub use user_event::{EventFilter, MAX_RAISES, MAX_USER_EVENTS};

/// `MOS_SIDE_CLI`: the client's side (its stack receives what the server sends).
pub const MOS_SIDE_CLI: u8 = Side::Cli as u8;
/// `MOS_SIDE_SVR`: the server's side (its stack receives what the client sends).
pub const MOS_SIDE_SVR: u8 = Side::Svr as u8;
pub use sockopt::{OptValue, OverlapPolicy, RingFragment, SockOpt, TcpBufInfo};
