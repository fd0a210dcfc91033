//! TCP sequence numbers: 32-bit counters compared modulo 2^32 (RFC 793 section 3.3, RFC 1982).
//!
//! Two sequence numbers are ordered by the sign of their wrapping difference, so `a` is before
//! `b` when `b` is less than 2^31 ahead of `a`. This order is not transitive over the whole
//! space, which is why [`SeqNum`] has inherent comparison methods instead of implementing
//! `PartialOrd`/`Ord`: sorting or a `BTreeMap` keyed by it would silently misbehave.

use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};

/// A TCP sequence or acknowledgment number.
///
/// `SeqNum + u32` and `SeqNum - u32` wrap; `SeqNum - SeqNum` is the signed distance
/// ([`SeqNum::distance`]).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The signed distance from `other` to `self`: positive when `self` is ahead.
    ///
    /// Correct whenever the two are less than 2^31 apart, which TCP's window rules guarantee
    /// for any pair a correct endpoint compares.
    #[inline]
    pub fn distance(self, other: SeqNum) -> i32 {
        // Reinterpreting the wrapped difference as two's complement gives the shorter way round.
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self` comes strictly before `other`.
    #[inline]
    pub fn lt(self, other: SeqNum) -> bool {
        self.distance(other) < 0
    }

    /// `self` comes before `other` or equals it.
    #[inline]
    pub fn le(self, other: SeqNum) -> bool {
        self.distance(other) <= 0
    }

    /// `self` comes strictly after `other`.
    #[inline]
    pub fn gt(self, other: SeqNum) -> bool {
        self.distance(other) > 0
    }

    /// `self` comes after `other` or equals it.
    #[inline]
    pub fn ge(self, other: SeqNum) -> bool {
        self.distance(other) >= 0
    }

    /// The later of the two, in sequence order.
    #[inline]
    pub fn max(self, other: SeqNum) -> SeqNum {
        if self.lt(other) {
            other
        } else {
            self
        }
    }

    /// The earlier of the two, in sequence order.
    #[inline]
    pub fn min(self, other: SeqNum) -> SeqNum {
        if self.lt(other) {
            self
        } else {
            other
        }
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for SeqNum {
    fn from(v: u32) -> Self {
        SeqNum(v)
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;
    #[inline]
    fn add(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs))
    }
}

impl AddAssign<u32> for SeqNum {
    #[inline]
    fn add_assign(&mut self, rhs: u32) {
        *self = *self + rhs;
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;
    #[inline]
    fn sub(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(rhs))
    }
}

impl SubAssign<u32> for SeqNum {
    #[inline]
    fn sub_assign(&mut self, rhs: u32) {
        *self = *self - rhs;
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = i32;
    /// The signed distance, as [`SeqNum::distance`].
    #[inline]
    fn sub(self, rhs: SeqNum) -> i32 {
        self.distance(rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_wraps() {
        assert_eq!(SeqNum(u32::MAX) + 1, SeqNum(0));
        assert_eq!(SeqNum(0) - 1, SeqNum(u32::MAX));
        let mut s = SeqNum(u32::MAX - 2);
        s += 5;
        assert_eq!(s, SeqNum(2));
        s -= 5;
        assert_eq!(s, SeqNum(u32::MAX - 2));
    }

    #[test]
    fn distance_is_signed_and_crosses_the_wrap() {
        assert_eq!(SeqNum(5) - SeqNum(u32::MAX - 4), 10);
        assert_eq!(SeqNum(u32::MAX - 4) - SeqNum(5), -10);
        assert_eq!(SeqNum(7).distance(SeqNum(7)), 0);
        assert_eq!(SeqNum(0x8000_0000).distance(SeqNum(0)), i32::MIN);
    }

    #[test]
    fn comparison_across_the_wrap() {
        let before = SeqNum(u32::MAX - 10);
        let after = SeqNum(10);
        assert!(before.lt(after) && before.le(after));
        assert!(after.gt(before) && after.ge(before));
        assert!(!after.lt(before) && !before.gt(after));
        assert!(before.le(before) && before.ge(before) && !before.lt(before));
        assert_eq!(before.max(after), after);
        assert_eq!(before.min(after), before);
        assert_eq!(after.max(before), after);
    }
}
