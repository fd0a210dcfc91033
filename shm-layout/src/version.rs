//! What every mos binary prints for `--version`: its package version and the shared-memory ABI
//! version it speaks, e.g. `mos-sensor 0.1.0 (shared-memory ABI 2.3)` (clap puts the name in
//! front).
//!
//! The ABI version is written out as a literal in [`abi_version!`](crate::abi_version) so that
//! [`version!`](macro@crate::version) can build the whole line with `concat!` at compile time (clap
//! takes a `&'static str`); a `const` assertion below ties the literal to
//! [`ABI_MAJOR`] and [`ABI_MINOR`], so one
//! cannot change without the other.

use crate::layout::{ABI_MAJOR, ABI_MINOR};

/// The shared-memory ABI version as a string literal, `"MAJOR.MINOR"`.
#[macro_export]
macro_rules! abi_version {
    () => {
        "2.3"
    };
}

/// The version line of the calling crate's binaries: `"PKG_VERSION (shared-memory ABI
/// MAJOR.MINOR)"`, with the calling package's `CARGO_PKG_VERSION`. For clap:
/// `#[command(version = shm_layout::version!())]`.
#[macro_export]
macro_rules! version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (shared-memory ABI ",
            $crate::abi_version!(),
            ")"
        )
    };
}

/// `"MAJOR.MINOR"` read as two numbers, or `None` when it is not that.
const fn parse_major_minor(s: &str) -> Option<(u16, u16)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut parts = [0u32; 2];
    let mut part = 0;
    let mut digits = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'.' {
            if part == 1 || digits == 0 {
                return None;
            }
            part = 1;
            digits = 0;
        } else if c.is_ascii_digit() {
            parts[part] = parts[part] * 10 + (c - b'0') as u32;
            digits += 1;
            if parts[part] > u16::MAX as u32 {
                return None;
            }
        } else {
            return None;
        }
        i += 1;
    }
    if part != 1 || digits == 0 {
        return None;
    }
    Some((parts[0] as u16, parts[1] as u16))
}

const _: () = match parse_major_minor(abi_version!()) {
    Some((major, minor)) => assert!(
        major == ABI_MAJOR && minor == ABI_MINOR,
        "abi_version!() does not match layout::ABI_MAJOR and ABI_MINOR"
    ),
    None => panic!("abi_version!() is not MAJOR.MINOR"),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_literal_is_the_layout_constants() {
        assert_eq!(abi_version!(), format!("{ABI_MAJOR}.{ABI_MINOR}"));
    }

    #[test]
    fn the_line_names_the_package_and_the_abi() {
        assert_eq!(
            crate::version!(),
            format!(
                "{} (shared-memory ABI {ABI_MAJOR}.{ABI_MINOR})",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn only_major_dot_minor_parses() {
        assert_eq!(parse_major_minor("2.3"), Some((2, 3)));
        assert_eq!(parse_major_minor("10.0"), Some((10, 0)));
        for bad in ["", "2", "2.", ".3", "2.3.1", "a.3", "2.x", "70000.1"] {
            assert_eq!(parse_major_minor(bad), None, "{bad}");
        }
    }
}
