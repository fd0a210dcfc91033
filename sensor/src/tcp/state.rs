//! One emulated endpoint's TCP state machine (the eleven states of mOS's `enum tcpstate`).
//!
//! A passive monitor sees each packet once, on the wire, and updates both endpoints from it in
//! mOS's order: first the sender's stack (what sending this packet does to it), then the
//! receiver's (what receiving it does). The transitions follow RFC 9293's diagram; the monitor
//! cannot know whether a packet really arrived, so it assumes it did.

use crate::parse::flags::{ACK, FIN, RST, SYN};
use shm_layout::TcpState;

/// The facts about one packet that the state machines read.
#[derive(Clone, Copy, Debug)]
pub struct SegmentFacts {
    /// TCP flags.
    pub flags: u8,
    /// Whether the packet's ACK acknowledges the receiver's FIN (only meaningful for the
    /// receiver's update: the receiver sent that FIN earlier).
    pub acks_receiver_fin: bool,
}

/// The sender's new state after sending the packet.
pub fn on_send(state: TcpState, f: SegmentFacts) -> TcpState {
    use TcpState::*;
    if f.flags & RST != 0 {
        return Closed;
    }
    let mut s = state;
    if f.flags & SYN != 0 {
        if f.flags & ACK == 0 {
            if matches!(s, Closed | Listen) {
                s = SynSent;
            }
        } else if matches!(s, Closed | Listen) {
            s = SynRcvd;
        }
    } else if f.flags & ACK != 0 && s == SynSent {
        // The client's third handshake segment, when the SYN/ACK itself was not captured.
        s = Established;
    }
    if f.flags & FIN != 0 {
        s = match s {
            SynRcvd | Established | SynSent => FinWait1,
            CloseWait => LastAck,
            other => other,
        };
    }
    s
}

/// The receiver's new state after receiving the packet.
pub fn on_receive(state: TcpState, f: SegmentFacts) -> TcpState {
    use TcpState::*;
    if f.flags & RST != 0 {
        return Closed;
    }
    let mut s = state;
    if f.flags & SYN != 0 {
        if f.flags & ACK == 0 {
            if matches!(s, Closed | Listen) {
                s = SynRcvd;
            }
        } else if s == SynSent {
            s = Established;
        }
    } else if f.flags & ACK != 0 {
        s = match s {
            SynRcvd => Established,
            FinWait1 if f.acks_receiver_fin => FinWait2,
            Closing if f.acks_receiver_fin => TimeWait,
            LastAck if f.acks_receiver_fin => Closed,
            other => other,
        };
    }
    if f.flags & FIN != 0 {
        s = match s {
            SynRcvd | Established => CloseWait,
            FinWait1 if f.acks_receiver_fin => TimeWait,
            FinWait1 => Closing,
            FinWait2 => TimeWait,
            other => other,
        };
    }
    s
}

/// Whether an endpoint in this state has finished with the connection.
pub fn is_done(state: TcpState) -> bool {
    matches!(state, TcpState::Closed | TcpState::TimeWait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    fn f(flags: u8, acks_fin: bool) -> SegmentFacts {
        SegmentFacts {
            flags,
            acks_receiver_fin: acks_fin,
        }
    }

    /// Drives a client and a server through a whole exchange, packet by packet, sender first.
    fn exchange(steps: &[(bool, u8, bool)]) -> Vec<(TcpState, TcpState)> {
        let (mut cli, mut svr) = (Closed, Listen);
        let mut trace = Vec::new();
        for &(from_client, flags, acks_fin) in steps {
            if from_client {
                cli = on_send(cli, f(flags, false));
                svr = on_receive(svr, f(flags, acks_fin));
            } else {
                svr = on_send(svr, f(flags, false));
                cli = on_receive(cli, f(flags, acks_fin));
            }
            trace.push((cli, svr));
        }
        trace
    }

    #[test]
    fn handshake_and_active_close_by_client() {
        let t = exchange(&[
            (true, SYN, false),
            (false, SYN | ACK, false),
            (true, ACK, false),
            (true, FIN | ACK, false),
            (false, ACK, true),
            (false, FIN | ACK, true),
            (true, ACK, true),
        ]);
        assert_eq!(
            t,
            vec![
                (SynSent, SynRcvd),
                (Established, SynRcvd),
                (Established, Established),
                (FinWait1, CloseWait),
                (FinWait2, CloseWait),
                (TimeWait, LastAck),
                (TimeWait, Closed),
            ]
        );
        assert!(is_done(t[6].0) && is_done(t[6].1));
    }

    #[test]
    fn simultaneous_close_goes_through_closing() {
        let (mut cli, mut svr) = (Established, Established);
        cli = on_send(cli, f(FIN | ACK, false));
        svr = on_send(svr, f(FIN | ACK, false));
        assert_eq!((cli, svr), (FinWait1, FinWait1));
        // Each FIN arrives without acknowledging the receiver's own FIN.
        cli = on_receive(cli, f(FIN | ACK, false));
        svr = on_receive(svr, f(FIN | ACK, false));
        assert_eq!((cli, svr), (Closing, Closing));
        cli = on_receive(cli, f(ACK, true));
        svr = on_receive(svr, f(ACK, true));
        assert_eq!((cli, svr), (TimeWait, TimeWait));
    }

    #[test]
    fn fin_ack_that_acknowledges_our_fin_skips_closing() {
        assert_eq!(on_receive(FinWait1, f(FIN | ACK, true)), TimeWait);
    }

    #[test]
    fn reset_closes_both_stacks_from_any_state() {
        for s in TcpState::ALL {
            assert_eq!(on_send(s, f(RST, false)), Closed);
            assert_eq!(on_receive(s, f(RST | ACK, false)), Closed);
        }
    }

    #[test]
    fn passive_close_by_server() {
        let (mut cli, mut svr) = (Established, Established);
        svr = on_send(svr, f(FIN | ACK, false));
        cli = on_receive(cli, f(FIN | ACK, false));
        assert_eq!((cli, svr), (CloseWait, FinWait1));
        cli = on_send(cli, f(FIN | ACK, false));
        svr = on_receive(svr, f(FIN | ACK, true));
        assert_eq!((cli, svr), (LastAck, TimeWait));
        svr = on_send(svr, f(ACK, false));
        cli = on_receive(cli, f(ACK, true));
        assert_eq!((cli, svr), (Closed, TimeWait));
    }
}
