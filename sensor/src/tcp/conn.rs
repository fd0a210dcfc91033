//! One tracked connection: both endpoints' emulated stacks and receive streams.

use super::reassembly::Stream;
use crate::event::EndReason;
use crate::flow::Endpoint;
use shm_layout::{Side, TcpState};

/// One endpoint's emulated stack.
#[derive(Debug, Default)]
pub struct Stack {
    /// Emulated TCP state.
    pub state: TcpState,
    /// This endpoint's initial sequence number, when its SYN was seen.
    pub isn: Option<u32>,
    /// Sequence number of this endpoint's FIN, once it sent one.
    pub fin_seq: Option<u32>,
    /// The receive stream: the bytes the *peer* sent to this endpoint.
    pub recv: Stream,
    /// Packets this endpoint sent.
    pub packets: u64,
}

/// A connection and its two stacks, indexed by [`Side::index`].
#[derive(Debug)]
pub struct Conn {
    /// Client and server endpoints, indexed by side.
    pub endpoints: [Endpoint; 2],
    /// Whether the client is the flow key's lower endpoint: with the `src_is_lo` that
    /// [`crate::flow::FlowKey::new`] returns, it names a packet's sender without comparing
    /// addresses.
    pub client_is_lo: bool,
    /// Both stacks, indexed by side.
    pub stacks: [Stack; 2],
    /// Roles were guessed (midstream pickup: neither SYN nor SYN/ACK seen).
    pub guessed: bool,
    /// Time of the first packet, ns.
    pub start_ns: u64,
    /// Time of the latest packet, ns.
    pub last_ns: u64,
    /// Both stacks are done (FIN handshake or reset) and why: the connection lingers, still
    /// taking late segments (retransmitted FINs, data sent after a reset), until it has been
    /// quiet for the linger time; then `CONN_END` is raised.
    pub closed: Option<EndReason>,
    /// `CONN_END` has been raised.
    pub ended: bool,
    /// Sequence in creation order within the tracker (ties in start time sort by it).
    pub serial: u64,
}

impl Conn {
    /// The stack of one side.
    pub fn stack(&self, side: Side) -> &Stack {
        &self.stacks[side.index()]
    }

    /// The stack of one side, mutably.
    pub fn stack_mut(&mut self, side: Side) -> &mut Stack {
        &mut self.stacks[side.index()]
    }

    /// The client endpoint.
    pub fn client(&self) -> Endpoint {
        self.endpoints[Side::Cli.index()]
    }

    /// The server endpoint.
    pub fn server(&self) -> Endpoint {
        self.endpoints[Side::Svr.index()]
    }

    /// Which side sent a packet whose source is (`true`) or is not the key's lower endpoint.
    #[inline]
    pub fn side_of_lo_sender(&self, src_is_lo: bool) -> Side {
        if src_is_lo == self.client_is_lo {
            Side::Cli
        } else {
            Side::Svr
        }
    }
}
