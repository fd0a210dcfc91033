//! Whether the sensor is still there. Its end of the control socket closes when its process
//! ends, however it ends (a SIGKILL included), so a look is one `poll` of a copy of that
//! socket that does not wait; once it has hung up, it stays so without further looks.

use rustix::event::{poll, PollFd, PollFlags};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Watches the sensor through a copy of the control socket.
#[derive(Debug)]
pub(crate) struct SensorWatch {
    fd: OwnedFd,
    gone: AtomicBool,
}

impl SensorWatch {
    /// Watches the peer of `fd`, a copy of the connected control socket.
    pub fn new(fd: OwnedFd) -> SensorWatch {
        SensorWatch {
            fd,
            gone: AtomicBool::new(false),
        }
    }

    /// Whether the sensor has hung up (a system call until it has, none after).
    pub fn gone(&self) -> bool {
        if self.known_gone() {
            return true;
        }
        let mut fds = [PollFd::new(&self.fd, PollFlags::RDHUP)];
        let now = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let hung = matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0
            && fds[0]
                .revents()
                .intersects(PollFlags::HUP | PollFlags::RDHUP | PollFlags::ERR));
        if hung {
            self.set_gone();
        }
        hung
    }

    /// Whether the sensor is known to have hung up, without looking.
    pub fn known_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// The sensor hung up (the control socket read as closed).
    pub fn set_gone(&self) {
        self.gone.store(true, Ordering::Relaxed);
    }
}
