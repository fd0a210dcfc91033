//! The Internet checksum (RFC 1071) and the TCP checksum over its pseudo-header.
//!
//! The sum runs over every payload byte of every segment when checking is on, so it adds eight
//! bytes at a time into a `u64` with end-around carry and folds to 16 bits once at the end:
//! one's-complement addition modulo 2^64 - 1 folds to the same result as modulo 2^16 - 1.

use super::ChecksumStatus;

/// IP protocol number of TCP, part of the pseudo-header.
const PROTO_TCP: u64 = 6;

/// The addresses that enter a TCP pseudo-header.
#[derive(Clone, Copy, Debug)]
pub enum PseudoHeader<'a> {
    /// IPv4 source and destination.
    V4(&'a [u8; 4], &'a [u8; 4]),
    /// IPv6 source and destination.
    V6(&'a [u8; 16], &'a [u8; 16]),
}

impl PseudoHeader<'_> {
    /// The one's-complement sum of the pseudo-header for a TCP segment of `len` bytes.
    fn sum(&self, len: usize) -> u64 {
        let addrs = match self {
            PseudoHeader::V4(s, d) => add(sum_bytes(&s[..]), sum_bytes(&d[..])),
            PseudoHeader::V6(s, d) => add(sum_bytes(&s[..]), sum_bytes(&d[..])),
        };
        // The length is at most 32 bits wide (IPv6 upper-layer length), the protocol 8.
        add(addrs, add(len as u64 & 0xffff_ffff, PROTO_TCP))
    }
}

/// One's-complement addition of two 64-bit partial sums.
#[inline(always)]
fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// The one's-complement sum of `data` read as big-endian 16-bit words (an odd last byte is
/// padded with zero), not yet folded.
#[inline]
pub fn sum_bytes(data: &[u8]) -> u64 {
    // RFC 1071: the one's-complement sum does not depend on byte order, and 32-bit words
    // summed into a 64-bit total need no carry handling until the end (2^32 words before it
    // can overflow). A plain sum of little-endian words is a loop the compiler vectorises;
    // one byte swap at the end gives the network-order sum.
    let mut words = data.chunks_exact(4);
    let mut acc: u64 = words
        .by_ref()
        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .sum();
    let rest = words.remainder();
    if !rest.is_empty() {
        // Zero padding after the last bytes keeps each byte at its 16-bit word position.
        let mut w = [0u8; 4];
        w[..rest.len()].copy_from_slice(rest);
        acc = add(acc, u64::from(u32::from_le_bytes(w)));
    }
    u64::from(fold(acc).swap_bytes())
}

/// Folds a 64-bit one's-complement sum to 16 bits.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The value to store in a TCP header's checksum field for `segment` (header and payload,
/// with the checksum field zero).
pub fn tcp_checksum(pseudo: PseudoHeader<'_>, segment: &[u8]) -> u16 {
    !fold(add(pseudo.sum(segment.len()), sum_bytes(segment)))
}

/// Whether the checksum field of the complete TCP `segment` holds.
pub fn tcp_checksum_ok(pseudo: PseudoHeader<'_>, segment: &[u8]) -> bool {
    fold(add(pseudo.sum(segment.len()), sum_bytes(segment))) == 0xffff
}

/// The checksum outcome for a TCP segment of `declared_len` bytes of which `present` are in
/// the frame: a segment cut short cannot be checked.
pub fn tcp_status(
    verify: bool,
    pseudo: PseudoHeader<'_>,
    present: &[u8],
    declared_len: usize,
) -> ChecksumStatus {
    if !verify || present.len() != declared_len {
        ChecksumStatus::Unchecked
    } else if tcp_checksum_ok(pseudo, present) {
        ChecksumStatus::Good
    } else {
        ChecksumStatus::Bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's definition, 16 bits at a time: the model the fast sum is checked against.
    fn slow_sum(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: the folded sum is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_bytes(&data)), 0xddf2);
    }

    #[test]
    fn fast_sum_matches_slow_sum_for_every_length() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8 | 0x80).collect();
        for len in 0..data.len() {
            let fast = fold(sum_bytes(&data[..len]));
            let slow = slow_sum(&data[..len]);
            // 0x0000 and 0xffff are the same value in one's complement.
            let norm = |x: u16| if x == 0xffff { 0 } else { x };
            assert_eq!(norm(fast), norm(slow), "len {len}");
        }
    }

    #[test]
    fn all_ones_carries_fold() {
        let data = [0xffu8; 64];
        assert_eq!(fold(sum_bytes(&data)), 0xffff);
    }

    #[test]
    fn written_checksum_verifies_and_a_flipped_byte_does_not() {
        let s = [10, 0, 0, 1];
        let d = [10, 0, 0, 2];
        let mut seg = vec![0u8; 20];
        seg[12] = 5 << 4;
        seg.extend_from_slice(b"hello, odd");
        let c = tcp_checksum(PseudoHeader::V4(&s, &d), &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(tcp_checksum_ok(PseudoHeader::V4(&s, &d), &seg));
        let len = seg.len();
        assert_eq!(
            tcp_status(true, PseudoHeader::V4(&s, &d), &seg, len),
            ChecksumStatus::Good
        );
        assert_eq!(
            tcp_status(false, PseudoHeader::V4(&s, &d), &seg, len),
            ChecksumStatus::Unchecked
        );
        assert_eq!(
            tcp_status(true, PseudoHeader::V4(&s, &d), &seg, len + 1),
            ChecksumStatus::Unchecked
        );
        seg[25] ^= 0x01;
        assert_eq!(
            tcp_status(true, PseudoHeader::V4(&s, &d), &seg, len),
            ChecksumStatus::Bad
        );
    }
}
