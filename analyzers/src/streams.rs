//! Reading each side of a connection as a sequence of byte runs and holes: what `mos-log` and
//! `mos-grep` do on every `CONN_NEW_DATA`.
//!
//! [`read_new`] peeks everything a side holds past the reader and hands it over as
//! [`Piece`]s, with the stream offset of each. What the reader can no longer have (bytes that
//! left the ring before it looked, a hole the capture never held, an overrun in live mode) is
//! a [`Piece::Lost`], so a parser knows where its stream stops being contiguous.

use mos_client::{Ctx, Errno, FlowId, Peek, Side, SockId};

/// A run of one side's stream.
#[derive(Debug)]
pub enum Piece<'a> {
    /// Bytes at stream offset `offset`.
    Data {
        /// Stream offset of the first byte.
        offset: u64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// `len` bytes from `offset` that this reader will never get.
    Lost {
        /// Stream offset of the first missing byte.
        offset: u64,
        /// How many.
        len: u64,
    },
}

/// Where a reader is in one side's stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    /// The next stream offset the consumer expects.
    pub pos: u64,
}

/// Why reading stopped before the side was drained.
#[derive(Debug)]
pub enum ReadStop {
    /// The connection is gone (stale handle) or its slot stayed busy: what was read is kept.
    Gone,
    /// Another error from `peek`.
    Failed(mos_client::Error),
}

/// Peeks everything `side` holds past the reader and passes it to `f` in stream order,
/// starting at `cur.pos` (a first call with `cur.pos == 0` on a side whose oldest held byte is
/// past 0 reports `[0, start)` as lost). `scratch` is the copy buffer (its size bounds each
/// `Data` piece). `f` returns `false` to stop early (the rest stays unread for the next call).
pub fn read_new(
    ctx: &mut Ctx<'_>,
    sock: SockId,
    flow: FlowId,
    side: Side,
    cur: &mut Cursor,
    scratch: &mut [u8],
    mut f: impl FnMut(Piece<'_>) -> bool,
) -> Result<(), ReadStop> {
    let gone = |e: mos_client::Error| {
        if e.errno() == Errno::EBADF || e.errno() == Errno::EAGAIN {
            ReadStop::Gone
        } else {
            ReadStop::Failed(e)
        }
    };
    let start = ctx.peek_offset(sock, flow, side).map_err(gone)?;
    if start > cur.pos {
        let len = start - cur.pos;
        let at = cur.pos;
        cur.pos = start;
        if !f(Piece::Lost { offset: at, len }) {
            return Ok(());
        }
    }
    loop {
        let piece = match ctx.peek(sock, flow, side, scratch).map_err(gone)? {
            Peek::NoData => return Ok(()),
            Peek::Data(n) => {
                let at = cur.pos;
                cur.pos += n as u64;
                Piece::Data {
                    offset: at,
                    bytes: &scratch[..n],
                }
            }
            Peek::Gap { offset, len } => {
                let at = cur.pos;
                let n = offset.saturating_sub(at) + len;
                cur.pos = at + n;
                Piece::Lost { offset: at, len: n }
            }
            Peek::Overrun { lost } => {
                let at = cur.pos;
                cur.pos += lost;
                Piece::Lost {
                    offset: at,
                    len: lost,
                }
            }
        };
        if !f(piece) {
            return Ok(());
        }
    }
}
