//! Errors: an errno name from the mOS manual pages and a sentence for the analyzer's user.
//!
//! mOS reports failures as `-1` with `errno` set; the C ABI will map [`Error`] back to exactly
//! that. In Rust each failure keeps both the errno (for programs) and a human sentence (for
//! people): `EBADF: flow handle 0/17/3 is stale (slot reused)`.

use std::fmt;
use std::io;

/// An errno value, named as the manual pages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(i32);

/// The errno values this library reports, with their names (Linux numbering).
const NAMES: &[(i32, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (4, "EINTR"),
    (5, "EIO"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (16, "EBUSY"),
    (22, "EINVAL"),
    (23, "ENFILE"),
    (24, "EMFILE"),
    (32, "EPIPE"),
    (38, "ENOSYS"),
    (61, "ENODATA"),
    (71, "EPROTO"),
    (88, "ENOTSOCK"),
    (92, "ENOPROTOOPT"),
    (94, "ESOCKTNOSUPPORT"),
    (97, "EAFNOSUPPORT"),
    (104, "ECONNRESET"),
    (107, "ENOTCONN"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
];

impl Errno {
    /// `EPERM`.
    pub const EPERM: Errno = Errno(1);
    /// `ENOENT`.
    pub const ENOENT: Errno = Errno(2);
    /// `EIO`.
    pub const EIO: Errno = Errno(5);
    /// `EBADF`: a socket that is not open, or a flow handle that is stale.
    pub const EBADF: Errno = Errno(9);
    /// `EAGAIN`.
    pub const EAGAIN: Errno = Errno(11);
    /// `EACCES`.
    pub const EACCES: Errno = Errno(13);
    /// `EINVAL`.
    pub const EINVAL: Errno = Errno(22);
    /// `ENOMEM`: no room for one more (user-defined events).
    pub const ENOMEM: Errno = Errno(12);
    /// `EMFILE`: no more sockets (at most 32 per attachment).
    pub const EMFILE: Errno = Errno(24);
    /// `ENOPROTOOPT`: the socket's type does not take that (a raw filter on a stream socket).
    pub const ENOPROTOOPT: Errno = Errno(92);
    /// `ENOSYS`: an option that is not implemented.
    pub const ENOSYS: Errno = Errno(38);
    /// `ENODATA`: nothing to read, or a packet that is no longer logged.
    pub const ENODATA: Errno = Errno(61);
    /// `EPROTO`: the sensor speaks another ABI, or published something that does not add up.
    pub const EPROTO: Errno = Errno(71);
    /// `ENOTCONN`: the sensor went away.
    pub const ENOTCONN: Errno = Errno(107);
    /// `ETIMEDOUT`.
    pub const ETIMEDOUT: Errno = Errno(110);
    /// `ECONNREFUSED`: nobody listens on the control socket.
    pub const ECONNREFUSED: Errno = Errno(111);

    /// The errno of this number.
    pub const fn from_raw(code: i32) -> Errno {
        Errno(code)
    }

    /// The number (Linux).
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The errno of this name (`"EACCES"`), if it is one this library knows.
    pub fn from_name(name: &str) -> Option<Errno> {
        NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|&(c, _)| Errno(c))
    }

    /// The name (`"EBADF"`), or `"errno N"` for a number this library does not name.
    pub fn name(self) -> String {
        match NAMES.iter().find(|(c, _)| *c == self.0) {
            Some((_, n)) => (*n).to_string(),
            None => format!("errno {}", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A failed call: the errno the manual pages give for it, and what happened. `Debug` prints
/// what `Display` does, so that a `main` returning `Result<(), Error>` ends with the errno
/// name and the sentence, not the struct.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    errno: Errno,
    message: String,
}

impl Error {
    /// An error with an errno and a sentence.
    pub fn new(errno: Errno, message: impl Into<String>) -> Error {
        Error {
            errno,
            message: message.into(),
        }
    }

    /// An error from an OS call, with what was being done.
    pub fn os(err: &io::Error, doing: impl fmt::Display) -> Error {
        let errno = Errno(err.raw_os_error().unwrap_or(Errno::EIO.0));
        Error::new(errno, format!("{doing}: {}", strip_os_suffix(err)))
    }

    /// The errno.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The sentence, without the errno name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.errno, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Errno {
        Errno(e.raw_os_error())
    }
}

/// `io::Error`'s text without the " (os error N)" it appends: the errno name is printed anyway.
fn strip_os_suffix(err: &io::Error) -> String {
    let s = err.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Shorthand for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_display() {
        let e = Error::new(Errno::ENOENT, "no sensor control socket at /x");
        assert_eq!(format!("{e:?}"), "ENOENT: no sensor control socket at /x");
    }

    #[test]
    fn display_is_name_then_sentence() {
        let e = Error::new(Errno::EBADF, "flow handle 0/17/3 is stale (slot reused)");
        assert_eq!(
            e.to_string(),
            "EBADF: flow handle 0/17/3 is stale (slot reused)"
        );
        assert_eq!(Errno::from_name("ENODATA"), Some(Errno::ENODATA));
        assert_eq!(Errno::from_name("EWHATEVER"), None);
        assert_eq!(Errno::from_raw(9999).name(), "errno 9999");
    }

    #[test]
    fn names_match_the_os_numbers() {
        use rustix::io::Errno as R;
        for (ours, os) in [
            (Errno::EBADF, R::BADF),
            (Errno::ENODATA, R::NODATA),
            (Errno::EPROTO, R::PROTO),
            (Errno::ENOTCONN, R::NOTCONN),
            (Errno::ECONNREFUSED, R::CONNREFUSED),
            (Errno::EACCES, R::ACCESS),
            (Errno::ENOENT, R::NOENT),
            (Errno::ETIMEDOUT, R::TIMEDOUT),
            (Errno::ENOSYS, R::NOSYS),
        ] {
            assert_eq!(ours, Errno::from(os));
        }
        let io = io::Error::from_raw_os_error(2);
        let e = Error::os(&io, "opening x");
        assert_eq!(e.errno(), Errno::ENOENT);
        assert_eq!(
            e.to_string(),
            "ENOENT: opening x: No such file or directory"
        );
    }
}
