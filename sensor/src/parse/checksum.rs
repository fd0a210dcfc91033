//! The Internet checksum (RFC 1071) and the TCP checksum over its pseudo-header.
//!
//! The sum runs over every payload byte of every segment when checking is on, and most
//! segments are short, so both ends of the range matter. Three facts of RFC 1071 make it
//! cheap:
//!
//! - the one's-complement sum of 16-bit words is the sum modulo 2^16 - 1, and since 2^16 is 1
//!   modulo 2^16 - 1, wider words (32, 64 bits) summed the same way fold to the same value;
//! - summing the words in the host's (little-endian) order gives the byte-swapped sum, so the
//!   bytes are read as they lie and one swap at the very end, if any, gives network order;
//! - the carries out of a 64-bit sum can wait: counted apart and added back once at the end,
//!   they fold to the same value as an end-around carry at every step.
//!
//! The 64-bit words are added in chains where each addition takes the previous one's carry
//! (the compiler makes them one `adc` each on x86-64), and the pseudo-header enters the same
//! sum as the segment, already in host word order, so a whole TCP checksum is one fold.

use super::ChecksumStatus;

/// IP protocol number of TCP, part of the pseudo-header.
const PROTO_TCP: u32 = 6;

/// The addresses that enter a TCP pseudo-header.
#[derive(Clone, Copy, Debug)]
pub enum PseudoHeader<'a> {
    /// IPv4 source and destination.
    V4(&'a [u8; 4], &'a [u8; 4]),
    /// IPv6 source and destination.
    V6(&'a [u8; 16], &'a [u8; 16]),
}

impl PseudoHeader<'_> {
    /// The sum, in host word order (see [`Sum`]), of the pseudo-header for a TCP segment of
    /// `len` bytes.
    #[inline]
    fn sum(&self, len: usize) -> Sum {
        // The length and protocol as the words of the pseudo-header hold them in network
        // order (IPv4: zero, protocol, 16-bit length; IPv6: 32-bit length, three zeros, next
        // header), read in host order. The IPv4 length is below 2^16 and the IPv6 one below
        // 2^32; either way its two 16-bit halves fold to the same sum.
        let len_proto = u64::from((len as u32).swap_bytes()) + u64::from(PROTO_TCP << 8);
        match self {
            PseudoHeader::V4(s, d) => Sum {
                // Three 32-bit values: no carry out of 64 bits.
                acc: len_proto
                    + u64::from(u32::from_le_bytes(**s))
                    + u64::from(u32::from_le_bytes(**d)),
                carries: 0,
            },
            PseudoHeader::V6(s, d) => {
                let (s, d) = (s.as_chunks::<8>().0, d.as_chunks::<8>().0);
                let mut sum = Sum {
                    acc: len_proto,
                    carries: 0,
                };
                sum.add_chain(&[s[0], s[1], d[0], d[1]]);
                sum
            }
        }
    }
}

/// A one's-complement sum in progress, in host word order: 64-bit words added modulo 2^64,
/// and the carries out of that addition counted apart (they cannot overflow: one per word at
/// most).
#[derive(Clone, Copy, Debug)]
struct Sum {
    acc: u64,
    carries: u64,
}

impl Sum {
    /// Adds one value.
    #[inline(always)]
    fn add(&mut self, w: u64) {
        let (s, c) = self.acc.overflowing_add(w);
        self.acc = s;
        self.carries += u64::from(c);
    }

    /// Adds `N` words read in host order, each addition taking the carry of the one before.
    #[inline(always)]
    fn add_chain<const N: usize>(&mut self, words: &[[u8; 8]; N]) {
        let mut acc = self.acc;
        let mut carry = false;
        for w in words {
            let (s, c1) = acc.overflowing_add(u64::from_le_bytes(*w));
            let (s, c2) = s.overflowing_add(u64::from(carry));
            acc = s;
            carry = c1 | c2;
        }
        self.acc = acc;
        self.carries += u64::from(carry);
    }

    /// Adds `data`: its 16-bit words in host (little-endian) order, an odd last byte padded
    /// with zero.
    ///
    /// Blocks of 64 bytes go in chains of eight words; the tail in pieces of 32, 16, 8, 4, 2
    /// and 1 bytes, each starting at an even offset, so every byte keeps its place in its
    /// 16-bit word.
    #[inline(always)]
    fn add_bytes(&mut self, data: &[u8]) {
        let (blocks, mut rest) = data.as_chunks::<64>();
        for blk in blocks {
            self.add_chain(blk.as_chunks::<8>().0.first_chunk::<8>().expect("64 bytes"));
        }
        if let Some((w, r)) = rest.split_first_chunk::<32>() {
            self.add_chain(w.as_chunks::<8>().0.first_chunk::<4>().expect("32 bytes"));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<16>() {
            self.add_chain(w.as_chunks::<8>().0.first_chunk::<2>().expect("16 bytes"));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<8>() {
            self.add(u64::from_le_bytes(*w));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<4>() {
            self.add(u64::from(u32::from_le_bytes(*w)));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<2>() {
            self.add(u64::from(u16::from_le_bytes(*w)));
            rest = r;
        }
        if let [last] = rest {
            self.add(u64::from(*last));
        }
    }

    /// The sum folded to 16 bits, still in host word order.
    #[inline]
    fn fold(self) -> u16 {
        // One end-around addition of the carries; the second cannot carry out, since after a
        // carry the sum is below `carries`.
        let (s, c) = self.acc.overflowing_add(self.carries);
        fold(s + u64::from(c))
    }
}

/// The one's-complement sum of `data` read as big-endian 16-bit words (an odd last byte is
/// padded with zero), folded to 16 bits and widened (so that [`fold`] leaves it as it is).
#[inline]
pub fn sum_bytes(data: &[u8]) -> u64 {
    let mut sum = Sum { acc: 0, carries: 0 };
    sum.add_bytes(data);
    u64::from(sum.fold().swap_bytes())
}

/// Folds a 64-bit one's-complement sum to 16 bits.
#[inline]
pub fn fold(sum: u64) -> u16 {
    let (s, carry) = (sum as u32).overflowing_add((sum >> 32) as u32);
    let s = s + u32::from(carry);
    let (s, carry) = (s as u16).overflowing_add((s >> 16) as u16);
    s + u16::from(carry)
}

/// The folded one's-complement sum, in host word order, of the pseudo-header and `segment`.
#[inline]
fn tcp_sum(pseudo: PseudoHeader<'_>, segment: &[u8]) -> u16 {
    let mut sum = pseudo.sum(segment.len());
    sum.add_bytes(segment);
    sum.fold()
}

/// The value to store in a TCP header's checksum field for `segment` (header and payload,
/// with the checksum field zero).
pub fn tcp_checksum(pseudo: PseudoHeader<'_>, segment: &[u8]) -> u16 {
    (!tcp_sum(pseudo, segment)).swap_bytes()
}

/// Whether the checksum field of the complete TCP `segment` holds.
#[inline]
pub fn tcp_checksum_ok(pseudo: PseudoHeader<'_>, segment: &[u8]) -> bool {
    // All ones is all ones in either byte order: no swap needed.
    tcp_sum(pseudo, segment) == 0xffff
}

/// The checksum outcome for a TCP segment of `declared_len` bytes of which `present` are in
/// the frame: a segment cut short cannot be checked.
#[inline]
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

/// The fast sums against a plain RFC 1071 model, on random and edge-case data.
#[cfg(test)]
mod model_tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 section 4.1, one 16-bit big-endian word at a time with the carry folded at
    /// every step; an odd last byte is the high half of a word padded with zero.
    fn reference_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let hi = u32::from(bytes[i]);
            let lo = if i + 1 < bytes.len() {
                u32::from(bytes[i + 1])
            } else {
                0
            };
            sum += (hi << 8) | lo;
            if sum > 0xffff {
                sum -= 0xffff;
            }
            i += 2;
        }
        sum as u16
    }

    /// The pseudo-header of RFC 793 (IPv4) or RFC 8200 section 8.1 (IPv6) as bytes, then the
    /// segment: the bytes the TCP checksum covers.
    fn covered(pseudo: PseudoHeader<'_>, segment: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        match pseudo {
            PseudoHeader::V4(s, d) => {
                v.extend_from_slice(s);
                v.extend_from_slice(d);
                v.extend_from_slice(&[0, 6]);
                let len = u16::try_from(segment.len()).expect("an IPv4 segment fits 16 bits");
                v.extend_from_slice(&len.to_be_bytes());
            }
            PseudoHeader::V6(s, d) => {
                v.extend_from_slice(s);
                v.extend_from_slice(d);
                let len = u32::try_from(segment.len()).expect("fits 32 bits");
                v.extend_from_slice(&len.to_be_bytes());
                v.extend_from_slice(&[0, 0, 0, 6]);
            }
        }
        v.extend_from_slice(segment);
        v
    }

    /// Every fast entry point on `segment` agrees with the model.
    fn check(pseudo: PseudoHeader<'_>, segment: &[u8]) -> Result<(), TestCaseError> {
        let want_plain = reference_sum(segment);
        prop_assert_eq!(fold(sum_bytes(segment)), want_plain);
        prop_assert_eq!(sum_bytes(segment), u64::from(want_plain));
        let want = reference_sum(&covered(pseudo, segment));
        prop_assert_eq!(tcp_checksum(pseudo, segment), !want);
        prop_assert_eq!(tcp_checksum_ok(pseudo, segment), want == 0xffff);
        let status = tcp_status(true, pseudo, segment, segment.len());
        let expect = if want == 0xffff {
            ChecksumStatus::Good
        } else {
            ChecksumStatus::Bad
        };
        prop_assert_eq!(status, expect);
        Ok(())
    }

    /// A TCP segment with its checksum written (when it has room for the field) verifies, and
    /// any one flipped bit makes it fail.
    fn check_written(pseudo: PseudoHeader<'_>, segment: &mut [u8], flip: usize) {
        if segment.len() < 18 {
            return;
        }
        segment[16..18].fill(0);
        let c = tcp_checksum(pseudo, segment);
        segment[16..18].copy_from_slice(&c.to_be_bytes());
        assert_eq!(reference_sum(&covered(pseudo, segment)), 0xffff);
        assert!(tcp_checksum_ok(pseudo, segment));
        let bit = flip % (segment.len() * 8);
        segment[bit / 8] ^= 1 << (bit % 8);
        assert!(!tcp_checksum_ok(pseudo, segment), "bit {bit} flipped");
    }

    fn addresses() -> impl Strategy<Value = (bool, [u8; 16], [u8; 16])> {
        (any::<bool>(), any::<[u8; 16]>(), any::<[u8; 16]>())
    }

    fn pseudo<'a>(v6: bool, s: &'a [u8; 16], d: &'a [u8; 16]) -> PseudoHeader<'a> {
        if v6 {
            PseudoHeader::V6(s, d)
        } else {
            let four = |a: &'a [u8; 16]| a.first_chunk::<4>().expect("16 bytes");
            PseudoHeader::V4(four(s), four(d))
        }
    }

    proptest! {
        /// Random contents, lengths up to 3000 and any start offset in the buffer (so odd
        /// addresses and odd lengths both occur).
        #[test]
        fn random_segments_match_the_model(
            (v6, s, d) in addresses(),
            buf in proptest::collection::vec(any::<u8>(), 0..3008),
            start in 0usize..8,
            flip in any::<usize>(),
        ) {
            let start = start.min(buf.len());
            let seg = &buf[start..];
            check(pseudo(v6, &s, &d), seg)?;
            let mut owned = seg.to_vec();
            check_written(pseudo(v6, &s, &d), &mut owned, flip);
        }

        /// Mostly-0xff data with a few random bytes: the carries that all-ones words make.
        #[test]
        fn near_all_ones_match_the_model(
            (v6, s, d) in addresses(),
            len in 0usize..3000,
            start in 0usize..8,
            pokes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        ) {
            let mut buf = vec![0xffu8; start + len];
            for (at, b) in pokes {
                if !buf.is_empty() {
                    let n = buf.len();
                    buf[at % n] = b;
                }
            }
            check(pseudo(v6, &s, &d), &buf[start..])?;
        }
    }

    #[test]
    fn every_short_length_at_every_alignment() {
        let buf: Vec<u8> = (0..340u32).map(|i| (i * 167 + 91) as u8).collect();
        let (s, d) = ([0xfe; 16], [0x01; 16]);
        for v6 in [false, true] {
            for start in 0..8 {
                for len in 0..=buf.len() - start {
                    check(pseudo(v6, &s, &d), &buf[start..start + len]).unwrap();
                }
            }
        }
    }

    #[test]
    fn all_ones_and_all_zeros_of_every_length() {
        let ones = vec![0xffu8; 3000];
        let zeros = vec![0u8; 3000];
        let (s, d) = ([0xff; 16], [0xff; 16]);
        for len in 0..=3000 {
            for v6 in [false, true] {
                check(pseudo(v6, &s, &d), &ones[..len]).unwrap();
                check(pseudo(v6, &s, &d), &zeros[..len]).unwrap();
            }
            assert_eq!(sum_bytes(&zeros[..len]), 0, "len {len}");
        }
    }

    #[test]
    fn ipv6_length_above_16_bits_enters_as_two_words() {
        let seg: Vec<u8> = (0..70_001u32).map(|i| (i % 251) as u8).collect();
        let (s, d) = ([0x20; 16], [0x30; 16]);
        check(PseudoHeader::V6(&s, &d), &seg).unwrap();
    }

    #[test]
    fn fold_keeps_zero_and_folds_all_ones() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        let sum = |acc, carries| Sum { acc, carries }.fold();
        assert_eq!(sum(u64::MAX, u64::MAX), 0xffff);
        assert_eq!(sum(u64::MAX, u64::MAX >> 1), 0x7fff);
        assert_eq!(sum(0, 1), 1);
        assert_eq!(sum(0, 0), 0);
    }
}
