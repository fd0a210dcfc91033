//! The analyzer's end of the control socket: a Unix `SOCK_SEQPACKET` connection to the sensor,
//! one bincode message per packet (`shm_layout::control`), descriptors passed with
//! `SCM_RIGHTS`.

use crate::error::{Errno, Error, Result};
use crate::watch::SensorWatch;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::sockopt::{set_socket_timeout, Timeout};
use rustix::net::{
    connect, recvmsg, sendmsg, socket_with, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use shm_layout::control::{decode, encode, ClientMsg, SensorMsg, MAX_MESSAGE};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Descriptors one message may carry (the welcome carries three; a few more are accepted and
/// closed, so a confused sensor cannot make us leak them).
const MAX_FDS: usize = 8;

/// What a non-blocking look at the socket found.
#[derive(Debug)]
pub(crate) enum Polled {
    /// Nothing waiting.
    Empty,
    /// A message (and the descriptors it carried).
    Msg(SensorMsg, Vec<OwnedFd>),
    /// The sensor closed its end.
    Closed,
}

/// A connected control socket.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    fd: OwnedFd,
    path: PathBuf,
    /// Where messages are received: made once, so that the run loop's looks at an idle
    /// socket cost a system call and no allocation.
    buf: Box<[u8]>,
}

impl ControlSocket {
    /// Connects to the sensor's socket at `path`; each way this fails is one clear sentence.
    /// A sensor that does not take the connection within `timeout` (its queue of pending
    /// connections full), or later takes no message for that long, is an `ETIMEDOUT` error
    /// instead of a hang.
    pub fn connect(path: &Path, timeout: Duration) -> Result<ControlSocket> {
        let shown = path.display();
        let addr = SocketAddrUnix::new(path).map_err(|e| {
            Error::new(
                Errno::EINVAL,
                format!("{shown} cannot name a Unix socket ({e})"),
            )
        })?;
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::new(e.into(), format!("cannot create a Unix socket: {e}")))?;
        // A Unix connect waits while the listener's queue is full, and a send while the
        // sensor's queue of messages is: the send timeout bounds both (they then fail with
        // EAGAIN).
        set_socket_timeout(&fd, Timeout::Send, Some(timeout)).map_err(|e| {
            Error::new(e.into(), format!("cannot set a timeout on the socket: {e}"))
        })?;
        if let Err(e) = connect(&fd, &addr) {
            if e == rustix::io::Errno::AGAIN {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    format!(
                        "the sensor at {shown} did not take the connection within {} s (its queue of pending connections is full: is it stuck?)",
                        timeout.as_secs_f64()
                    ),
                ));
            }
            let errno = Errno::from(e);
            let msg = match errno {
                Errno::ENOENT => {
                    format!("no sensor control socket at {shown}: is mos-sensor running?")
                }
                Errno::ECONNREFUSED => format!(
                    "nothing accepts connections on {shown}: mos-sensor is not running (the socket file is left over)"
                ),
                Errno::EACCES | Errno::EPERM => format!(
                    "permission denied on {shown}: this user may not attach to the sensor (see its allowed users and groups)"
                ),
                _ if e == rustix::io::Errno::PROTOTYPE => format!(
                    "{shown} is not a sensor control socket (not SOCK_SEQPACKET)"
                ),
                _ => format!("cannot connect to {shown}: {e}"),
            };
            return Err(Error::new(errno, msg));
        }
        Ok(ControlSocket {
            fd,
            path: path.to_path_buf(),
            buf: vec![0u8; MAX_MESSAGE].into_boxed_slice(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A watch on the sensor at the other end, through a copy of the socket.
    pub fn watch(&self) -> Result<SensorWatch> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::os(&e, "cannot copy the control socket's descriptor"))?;
        Ok(SensorWatch::new(fd))
    }

    /// Sends one message.
    pub fn send(&self, msg: &ClientMsg) -> Result<()> {
        let bytes = encode(msg);
        let mut control = SendAncillaryBuffer::default();
        match sendmsg(
            &self.fd,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e == rustix::io::Errno::PIPE || e == rustix::io::Errno::CONNRESET => {
                Err(Error::new(
                    Errno::ENOTCONN,
                    "the sensor went away (control socket closed)",
                ))
            }
            Err(e) if e == rustix::io::Errno::AGAIN => Err(Error::new(
                Errno::ETIMEDOUT,
                format!(
                    "the sensor at {} takes no messages (its queue stayed full for the send timeout)",
                    self.path.display()
                ),
            )),
            Err(e) => Err(Error::new(
                e.into(),
                format!("cannot write to the control socket: {e}"),
            )),
        }
    }

    /// Receives one message, waiting at most `timeout` (`None`: forever); `Polled::Empty` when
    /// the time ran out.
    pub fn recv_timeout(&mut self, timeout: Option<Duration>) -> Result<Polled> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|l| rustix::time::Timespec {
                tv_sec: l.as_secs() as i64,
                tv_nsec: i64::from(l.subsec_nanos()),
            });
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Ok(Polled::Empty),
                Ok(_) => return self.try_recv(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(Error::new(
                        e.into(),
                        format!("cannot wait on the control socket: {e}"),
                    ))
                }
            }
        }
    }

    /// Receives one message if one is waiting, without blocking.
    pub fn try_recv(&mut self) -> Result<Polled> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let res = recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(&mut self.buf)],
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        );
        let got = match res {
            Ok(got) => got,
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => {
                return Ok(Polled::Empty)
            }
            Err(e) if e == rustix::io::Errno::CONNRESET => return Ok(Polled::Closed),
            Err(e) => {
                return Err(Error::new(
                    e.into(),
                    format!("cannot read the control socket: {e}"),
                ))
            }
        };
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = msg {
                fds.extend(rights);
            }
        }
        if got.bytes == 0 && fds.is_empty() {
            return Ok(Polled::Closed);
        }
        if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(Error::new(
                Errno::EPROTO,
                "the sensor sent a control message larger than the protocol allows",
            ));
        }
        let msg = decode::<SensorMsg>(&self.buf[..got.bytes.min(self.buf.len())])
            .map_err(|e| Error::new(Errno::EPROTO, format!("from the sensor: {e}")))?;
        Ok(Polled::Msg(msg, fds))
    }
}
