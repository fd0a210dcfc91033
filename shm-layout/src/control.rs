//! Messages on the control socket (a Unix `SOCK_SEQPACKET` socket: one message per packet,
//! encoded with bincode). The sensor's answer to `Hello` carries three descriptors
//! (`SCM_RIGHTS`): the main region and the analyzer's event region, both read-only, and the
//! analyzer's page, writable.

use serde::{Deserialize, Serialize};

/// The largest message either side sends or accepts, in bytes.
pub const MAX_MESSAGE: usize = 4096;

/// What an analyzer subscribes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Built-in event bits ([`crate::EventMask`]) it wants on any side.
    pub events: u64,
    /// Whether it reads packets (`getlastpkt`): the sensor then keeps the packet log.
    pub packets: bool,
}

/// Analyzer to sensor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message: who is attaching, and the ABI it reads.
    Hello {
        /// ABI major version of the analyzer's library.
        abi_major: u16,
        /// ABI minor version.
        abi_minor: u16,
        /// A name for logs and status (truncated by the sensor to 64 bytes).
        name: String,
    },
    /// Replaces the subscription (events and packets).
    Subscribe(Subscription),
    /// The analyzer's callbacks are registered: it is ready for events (`--wait-analyzers`
    /// counts it from now on).
    Ready,
    /// The analyzer leaves.
    Detach,
}

/// Sensor to analyzer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SensorMsg {
    /// Attached: the three descriptors come with this message.
    Welcome {
        /// The analyzer's number for this sensor run.
        analyzer_id: u32,
        /// The sensor's epoch (as in the header).
        epoch: u64,
        /// Bytes of the main region.
        main_len: u64,
        /// Bytes of the event region.
        events_len: u64,
        /// Records per event ring.
        event_capacity: u64,
        /// Workers (one event ring each).
        nworkers: u32,
        /// Bytes of the analyzer page.
        page_len: u64,
    },
    /// Attach refused: an errno name from the manual pages and a sentence.
    Refused {
        /// `EACCES`, `EPROTO`, `EBUSY`, ...
        errno: String,
        /// Why, for the analyzer's user.
        reason: String,
    },
    /// A subscription was applied.
    Subscribed,
    /// The sensor detached the analyzer (stalled, or shutting down).
    Detached {
        /// Why.
        reason: String,
    },
    /// The input ended and every event is published: drain the rings and stop.
    Done,
}

/// Encodes a message for the socket.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    bincode::serialize(msg).expect("control messages always encode")
}

/// Decodes a message from the socket; an error names what was wrong.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    if bytes.len() > MAX_MESSAGE {
        return Err(format!("control message of {} bytes", bytes.len()));
    }
    bincode::options()
        .with_limit(MAX_MESSAGE as u64)
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| format!("bad control message: {e}"))
}

use bincode::Options as _;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = ClientMsg::Hello {
            abi_major: 1,
            abi_minor: 0,
            name: "mos-dump".into(),
        };
        assert_eq!(decode::<ClientMsg>(&encode(&m)).unwrap(), m);
        let s = SensorMsg::Refused {
            errno: "EACCES".into(),
            reason: "uid 65534 is not allowed".into(),
        };
        assert_eq!(decode::<SensorMsg>(&encode(&s)).unwrap(), s);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ClientMsg>(&[0xff; 16]).is_err());
        assert!(decode::<ClientMsg>(&[]).is_err());
        // A string length far past the message.
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<ClientMsg>(&b).is_err());
    }
}
