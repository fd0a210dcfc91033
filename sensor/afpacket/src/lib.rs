//! Live packet capture on Linux through an `AF_PACKET` socket with a `TPACKET_V3` receive ring,
//! optionally joined to a fanout group.
//!
//! A [`Ring`] is a packet socket bound to one interface plus a ring of blocks shared with the
//! kernel by `mmap`. The kernel fills a block with frames and hands it to user space; the reader
//! takes it with [`Ring::next_block`], walks its frames, and gives it back by dropping the
//! [`Block`]. Nothing is copied or allocated per packet.
//!
//! ```no_run
//! use std::time::Duration;
//! use mos_afpacket::{Ring, RingOptions};
//!
//! let mut ring = Ring::open("eth0", RingOptions::default())?;
//! loop {
//!     let Some(block) = ring.next_block(Duration::from_millis(100))? else { continue };
//!     for frame in &block {
//!         println!("{} bytes at {} ns", frame.wire_len, frame.ts_ns);
//!     }
//!     // Dropping `block` returns it to the kernel.
//! }
//! # Ok::<(), mos_afpacket::Error>(())
//! ```
//!
//! **VLAN tags.** With `TPACKET_V3` the kernel takes an 802.1Q tag that the device or the stack
//! already removed from the packet (VLAN offload, which veth and most NICs do) and reports it in
//! the frame header instead of the packet bytes. This crate does not put the tag back into
//! [`Frame::data`] (that would need a copy); it exposes it as [`Frame::vlan_tci`].
//!
//! **Loopback devices.** On a loopback device the kernel hands every frame to a packet socket
//! twice: as it is sent and as it comes back in. [`Ring::is_loopback`] says whether the
//! interface is one, and [`Frame::is_outgoing`] marks the sent copy (`PACKET_OUTGOING`), which
//! a reader that wants each frame once skips, as libpcap does. The ring itself delivers both.
//!
//! **Fanout.** Sockets that join the same [`Fanout`] group on the same interface share its
//! traffic: each frame goes to exactly one of them. With [`FanoutMode::Hash`] the kernel picks the
//! socket from `__skb_get_hash_symmetric`, a flow hash over addresses and ports computed after
//! ordering the two endpoints, so both directions of a flow reach the same socket. (Kernels before
//! the 2022 fix "net: core: fix flow symmetric hash" ordered IPv4 addresses by the sign of their
//! difference and split flows whose addresses, as 32-bit words, differ by exactly 2^31; this
//! crate's fanout test includes such a pair and checks the symmetry on the kernel it runs on.)
//!
//! **Privileges.** Opening a ring needs `CAP_NET_RAW` in the user namespace that owns the
//! interface's network namespace (root has it).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why opening or reading a ring failed. Its `Display` is one line meant for an operator.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The interface name does not name an interface in this network namespace.
    NoSuchInterface {
        /// The name that was asked for.
        iface: String,
    },
    /// The kernel refused a step with `EPERM` or `EACCES`: the process lacks `CAP_NET_RAW`.
    PermissionDenied {
        /// The interface that was asked for.
        iface: String,
    },
    /// The options cannot make a valid ring; nothing was asked of the kernel.
    InvalidOptions {
        /// What is wrong with them.
        reason: String,
    },
    /// A system call failed.
    Os {
        /// The step that failed, e.g. `setsockopt(PACKET_RX_RING)`.
        step: &'static str,
        /// The interface of the ring.
        iface: String,
        /// The error the kernel returned.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchInterface { iface } => write!(f, "no network interface named {iface}"),
            Error::PermissionDenied { iface } => {
                write!(f, "capturing on {iface} needs root or CAP_NET_RAW")
            }
            Error::InvalidOptions { reason } => write!(f, "invalid ring options: {reason}"),
            Error::Os {
                step,
                iface,
                source,
            } => write!(f, "{step} failed for {iface}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a fanout group spreads frames over its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FanoutMode {
    /// `PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG`: by the kernel's symmetric flow hash, so
    /// both directions of a flow go to the same socket. IP fragments are reassembled before
    /// hashing (so all of a datagram lands together), which means such a socket sees the
    /// reassembled datagram rather than the fragments.
    Hash,
}

/// Membership in a fanout group: every socket with the same `group_id` on the same interface
/// (and network namespace) shares the interface's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// The group's id; sockets join the same group by passing the same id and mode.
    pub group_id: u16,
    /// How the group spreads frames.
    pub mode: FanoutMode,
}

impl Fanout {
    /// A hash fanout group with this id.
    pub fn hash(group_id: u16) -> Fanout {
        Fanout {
            group_id,
            mode: FanoutMode::Hash,
        }
    }
}

/// The shape of a ring and how the socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOptions {
    /// Bytes per block: a power of two and a multiple of the page size. Default 1 MiB. A frame
    /// never spans two blocks, so this also bounds the largest frame kept whole.
    pub block_size: usize,
    /// Blocks in the ring. Default 64 (64 MiB of ring with the default block size).
    pub block_count: usize,
    /// The nominal frame slot size the kernel asks for (a multiple of 16 that divides
    /// `block_size`). `TPACKET_V3` packs frames back to back at their own length, so this only
    /// has to satisfy the kernel's checks. Default 2048.
    pub frame_size: usize,
    /// How long the kernel waits before handing over a block that is not full, in milliseconds.
    /// Default 10. This bounds the latency of a quiet link.
    pub block_timeout_ms: u32,
    /// Put the interface into promiscuous mode for the life of the socket. Default true.
    pub promiscuous: bool,
    /// Join a fanout group after binding. Default none.
    pub fanout: Option<Fanout>,
}

impl Default for RingOptions {
    fn default() -> RingOptions {
        RingOptions {
            block_size: 1 << 20,
            block_count: 64,
            frame_size: 2048,
            block_timeout_ms: 10,
            promiscuous: true,
            fanout: None,
        }
    }
}

/// Kernel counters of a ring, totals since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames the kernel passed to this socket, including those it then dropped.
    pub packets: u64,
    /// Frames dropped because no block was free (or the filter or memory failed).
    pub drops: u64,
    /// Times the ring filled up and the kernel froze it until user space returned a block.
    pub queue_freezes: u64,
}

/// A packet socket with a mapped `TPACKET_V3` receive ring, bound to one interface.
///
/// Dropping it unmaps the ring and closes the socket, which also leaves the fanout group and
/// ends promiscuous mode if this socket asked for it.
#[derive(Debug)]
pub struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    block_count: usize,
    next: usize,
    iface: String,
    loopback: bool,
    totals: Stats,
}

// SAFETY: `Ring` exclusively owns its socket and its mapping; the raw pointer is only an address
// of that mapping, which is valid from any thread. Nothing in it is tied to the creating thread.
unsafe impl Send for Ring {}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

fn check_options(o: &RingOptions) -> Result<()> {
    let bad = |reason: String| Err(Error::InvalidOptions { reason });
    let page = page_size();
    if !o.block_size.is_power_of_two() || !o.block_size.is_multiple_of(page) {
        return bad(format!(
            "block_size {} is not a power of two multiple of the page size {page}",
            o.block_size
        ));
    }
    if o.block_size > u32::MAX as usize / 2 {
        return bad(format!("block_size {} is too large", o.block_size));
    }
    if o.block_count == 0 {
        return bad("block_count is 0".into());
    }
    let min_frame = libc::TPACKET3_HDRLEN;
    if o.frame_size < min_frame || !o.frame_size.is_multiple_of(libc::TPACKET_ALIGNMENT) {
        return bad(format!(
            "frame_size {} is not a multiple of {} of at least {min_frame}",
            o.frame_size,
            libc::TPACKET_ALIGNMENT
        ));
    }
    if !o.block_size.is_multiple_of(o.frame_size) {
        return bad(format!(
            "frame_size {} does not divide block_size {}",
            o.frame_size, o.block_size
        ));
    }
    let total = o.block_size.checked_mul(o.block_count);
    let frames = (o.block_size / o.frame_size).checked_mul(o.block_count);
    match (total, frames) {
        (Some(t), Some(f)) if t <= isize::MAX as usize && f <= u32::MAX as usize => Ok(()),
        _ => bad(format!(
            "{} blocks of {} bytes are too many",
            o.block_count, o.block_size
        )),
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` for the whole call and the length passed
    // is exactly its size; the kernel only reads that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

impl Ring {
    /// Opens a ring on `iface`.
    ///
    /// The steps: look the interface up; open a packet socket (with protocol 0, so that it
    /// receives nothing until it is bound to `iface`: a socket opened with `ETH_P_ALL` would
    /// catch frames of every interface in the moments before `bind`); select `TPACKET_V3`; ask
    /// for the receive ring; map it; bind to the interface with `ETH_P_ALL`; add promiscuous
    /// membership if asked; join the fanout group if asked (the kernel only accepts that once
    /// the socket is bound).
    pub fn open(iface: &str, opts: RingOptions) -> Result<Ring> {
        check_options(&opts)?;
        let no_such = || Error::NoSuchInterface {
            iface: iface.to_owned(),
        };
        let name = CString::new(iface).map_err(|_| no_such())?;
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
            return Err(no_such());
        }
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => no_such(),
                _ => Error::Os {
                    step: "if_nametoindex",
                    iface: iface.to_owned(),
                    source: e,
                },
            });
        }
        let fail = |step: &'static str, e: io::Error| {
            if is_permission(&e) {
                Error::PermissionDenied {
                    iface: iface.to_owned(),
                }
            } else {
                Error::Os {
                    step,
                    iface: iface.to_owned(),
                    source: e,
                }
            }
        };

        // SAFETY: plain system call with constant arguments.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(fail("socket(AF_PACKET)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
        )
        .map_err(|e| fail("setsockopt(PACKET_VERSION)", e))?;

        let req = libc::tpacket_req3 {
            tp_block_size: opts.block_size as libc::c_uint,
            tp_block_nr: opts.block_count as libc::c_uint,
            tp_frame_size: opts.frame_size as libc::c_uint,
            tp_frame_nr: ((opts.block_size / opts.frame_size) * opts.block_count) as libc::c_uint,
            tp_retire_blk_tov: opts.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| fail("setsockopt(PACKET_RX_RING)", e))?;

        let map_len = opts.block_size * opts.block_count;
        // SAFETY: a fresh shared mapping of the socket's ring, at an address the kernel picks;
        // no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(fail("mmap of the ring", io::Error::last_os_error()));
        }
        // From here on `ring` owns the mapping and the socket; an early return unmaps and closes.
        let mut ring = Ring {
            fd,
            map: NonNull::new(addr.cast()).expect("mmap returned a null mapping"),
            map_len,
            block_size: opts.block_size,
            block_count: opts.block_count,
            next: 0,
            iface: iface.to_owned(),
            loopback: false,
            totals: Stats::default(),
        };

        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a live sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(fail("bind", io::Error::last_os_error()));
        }
        ring.loopback =
            is_loopback(ring.fd.as_raw_fd(), &name).map_err(|(step, e)| fail(step, e))?;

        if opts.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as libc::c_int,
                mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(
                ring.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
            )
            .map_err(|e| fail("setsockopt(PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC)", e))?;
        }

        if let Some(fanout) = opts.fanout {
            let type_flags = match fanout.mode {
                FanoutMode::Hash => libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG,
            };
            let arg: u32 = u32::from(fanout.group_id) | (type_flags << 16);
            setsockopt(
                ring.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                &arg,
            )
            .map_err(|e| fail("setsockopt(PACKET_FANOUT)", e))?;
        }

        Ok(ring)
    }

    /// The interface this ring captures on.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    /// Whether the interface is a loopback device (`IFF_LOOPBACK`, or hardware type
    /// `ARPHRD_LOOPBACK`), found when the ring was opened.
    ///
    /// A packet socket on a loopback device receives every frame twice: once as it is sent
    /// ([`Frame::is_outgoing`]) and once as it comes back in. A reader that wants each frame
    /// once skips the outgoing copies, as libpcap does.
    pub fn is_loopback(&self) -> bool {
        self.loopback
    }

    /// The next block the kernel has handed to user space, waiting up to `timeout` for one;
    /// `Ok(None)` if none came in time. A zero timeout only checks.
    ///
    /// Blocks come in ring order. The block is returned to the kernel when the [`Block`] is
    /// dropped; until then the ring cannot be read further, and the kernel can use only the
    /// other blocks.
    pub fn next_block(&mut self, timeout: Duration) -> Result<Option<Block<'_>>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let desc = self.block_ptr(self.next);
            // SAFETY: `desc` points at the start of a block inside our live mapping, which is
            // page aligned, so the status word is aligned and valid while `self` lives. The kernel
            // writes it concurrently, which is why it is read atomically.
            let status =
                unsafe { AtomicU32::from_ptr(block_status_ptr(desc)) }.load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER != 0 {
                // Order the reads of the block's contents after the status read.
                fence(Ordering::Acquire);
                self.next = (self.next + 1) % self.block_count;
                return Ok(Some(Block {
                    desc,
                    block_size: self.block_size,
                    _ring: PhantomData,
                }));
            }
            if timeout.is_zero() {
                return Ok(None);
            }
            let left = match deadline {
                None => Duration::from_secs(3600),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            if left.is_zero() {
                return Ok(None);
            }
            // Round up so that a sub-millisecond remainder still waits rather than spinning.
            let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            // SAFETY: `pfd` is one live pollfd and the count passed is 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.os_error("poll", e));
            }
            if pfd.revents & libc::POLLNVAL != 0 {
                return Err(self.os_error("poll", io::Error::from_raw_os_error(libc::EBADF)));
            }
            if pfd.revents & libc::POLLERR != 0 {
                // A pending socket error (e.g. ENETDOWN when the interface goes away); reading
                // SO_ERROR clears it.
                if let Some(e) = self.take_socket_error()? {
                    return Err(self.os_error("poll", e));
                }
            }
        }
    }

    /// The kernel's counters for this socket, as totals since the ring was opened. (The kernel
    /// resets its counters on every read; the ring adds them up.)
    pub fn stats(&mut self) -> Result<Stats> {
        // SAFETY: tpacket_stats_v3 is plain old data; all-zero is a valid value.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` is a live tpacket_stats_v3 and `len` holds its size; the kernel writes at
        // most `len` bytes into it and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(self.os_error("getsockopt(PACKET_STATISTICS)", io::Error::last_os_error()));
        }
        self.totals.packets += u64::from(st.tp_packets);
        self.totals.drops += u64::from(st.tp_drops);
        self.totals.queue_freezes += u64::from(st.tp_freeze_q_cnt);
        Ok(self.totals)
    }

    fn take_socket_error(&self) -> Result<Option<io::Error>> {
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` is a live c_int and `len` holds its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(self.os_error("getsockopt(SO_ERROR)", io::Error::last_os_error()));
        }
        Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
    }

    fn os_error(&self, step: &'static str, source: io::Error) -> Error {
        Error::Os {
            step,
            iface: self.iface.clone(),
            source,
        }
    }

    fn block_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.block_count);
        // SAFETY: `index < block_count`, so the offset stays inside the mapping of
        // `block_size * block_count` bytes.
        unsafe { self.map.as_ptr().add(index * self.block_size) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` describe the mapping made in `open`, unmapped only here; no
        // `Block` can be alive because each borrows the ring. The socket closes after this, when
        // `fd` drops.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// Whether the interface the packet socket `fd` is bound to (named `name`) is a loopback
/// device: its flags have `IFF_LOOPBACK`, or its hardware type is `ARPHRD_LOOPBACK`. On error,
/// the step that failed and the error.
fn is_loopback(fd: RawFd, name: &CString) -> Result<bool, (&'static str, io::Error)> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The caller checked that the name is shorter than IFNAMSIZ, so its NUL fits too.
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a live ifreq holding a NUL-terminated name; SIOCGIFFLAGS writes only
    // the flags member of its union.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) };
    if rc != 0 {
        return Err(("ioctl(SIOCGIFFLAGS)", io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member is the one the kernel wrote.
    let flags = i32::from(unsafe { req.ifr_ifru.ifru_flags });
    if flags & libc::IFF_LOOPBACK != 0 {
        return Ok(true);
    }
    // A bound packet socket's own address carries the device's hardware type.
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a live sockaddr_ll and `len` holds its size; the kernel writes at most
    // `len` bytes into it and updates `len`.
    let rc =
        unsafe { libc::getsockname(fd, (&mut sll as *mut libc::sockaddr_ll).cast(), &mut len) };
    if rc != 0 {
        return Err(("getsockname", io::Error::last_os_error()));
    }
    Ok(sll.sll_hatype == libc::ARPHRD_LOOPBACK)
}

/// The status word of a block descriptor starting at `desc`.
fn block_status_ptr(desc: *mut u8) -> *mut u32 {
    let off =
        offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, block_status);
    desc.wrapping_add(off).cast()
}

/// One block of the ring, owned by user space until dropped.
///
/// Iterate it (`for frame in &block`) to get its frames in arrival order. Dropping it hands the
/// block back to the kernel.
pub struct Block<'a> {
    desc: *mut u8,
    block_size: usize,
    _ring: PhantomData<&'a mut Ring>,
}

impl fmt::Debug for Block<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("seq_num", &self.seq_num())
            .field("frames", &self.len())
            .field("timed_out", &self.timed_out())
            .finish()
    }
}

impl Block<'_> {
    fn header(&self) -> libc::tpacket_hdr_v1 {
        // SAFETY: the block belongs to user space while `self` lives, so the kernel does not
        // write its header; the descriptor sits at the page-aligned start of the block, and
        // tpacket_hdr_v1 is plain old data.
        unsafe {
            std::ptr::read(
                self.desc
                    .add(offset_of!(libc::tpacket_block_desc, hdr))
                    .cast::<libc::tpacket_hdr_v1>(),
            )
        }
    }

    /// How many frames the block holds.
    pub fn len(&self) -> usize {
        self.header().num_pkts as usize
    }

    /// Whether the block holds no frames (the kernel can retire an empty block on timeout).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kernel's sequence number of this block, counting every block it filled.
    pub fn seq_num(&self) -> u64 {
        self.header().seq_num
    }

    /// Whether the kernel handed the block over because its timeout ran out rather than because
    /// it was full.
    pub fn timed_out(&self) -> bool {
        self.header().block_status & libc::TP_STATUS_BLK_TMO != 0
    }

    /// The frames of the block, in arrival order.
    pub fn frames(&self) -> Frames<'_> {
        let h = self.header();
        Frames {
            base: self.desc,
            block_size: self.block_size,
            offset: h.offset_to_first_pkt as usize,
            left: h.num_pkts,
            _block: PhantomData,
        }
    }
}

impl<'b> IntoIterator for &'b Block<'_> {
    type Item = Frame<'b>;
    type IntoIter = Frames<'b>;
    fn into_iter(self) -> Frames<'b> {
        self.frames()
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        // Every read of the block's frames happens before the kernel may see it free again.
        fence(Ordering::Release);
        // SAFETY: the status word lies inside our live mapping (the ring is borrowed by this
        // block) and is aligned; storing it atomically is how the block changes hands.
        unsafe { AtomicU32::from_ptr(block_status_ptr(self.desc)) }
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }
}

/// An iterator over the frames of a [`Block`].
///
/// It stops early, rather than read outside the block, if a frame header's offsets would point
/// past the end of the block (which a correct kernel never does).
pub struct Frames<'b> {
    base: *mut u8,
    block_size: usize,
    offset: usize,
    left: u32,
    _block: PhantomData<&'b ()>,
}

impl fmt::Debug for Frames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frames").field("left", &self.left).finish()
    }
}

/// One captured frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'b> {
    /// Receive time, nanoseconds since the Unix epoch (the kernel's software timestamp).
    pub ts_ns: u64,
    /// The captured bytes starting at the link-layer header: the whole frame unless it was
    /// larger than a block can hold. A VLAN tag that the device removed is not in here; see
    /// [`Frame::vlan_tci`].
    pub data: &'b [u8],
    /// The frame's length on the wire (as the kernel saw it, without an offloaded VLAN tag).
    pub wire_len: u32,
    /// The 802.1Q tag control information (priority, DEI, VLAN id) of a tag the kernel moved out
    /// of the packet, if there was one.
    pub vlan_tci: Option<u16>,
    /// Whom the frame was for, as the kernel classed it: the `sll_pkttype` of its link-layer
    /// address (`PACKET_HOST` 0, `PACKET_BROADCAST` 1, `PACKET_MULTICAST` 2,
    /// `PACKET_OTHERHOST` 3, `PACKET_OUTGOING` 4, from `<linux/if_packet.h>`).
    pub pkt_type: u8,
}

impl Frame<'_> {
    /// Whether this host sent the frame (`PACKET_OUTGOING`) rather than received it. On a
    /// loopback device every frame comes once this way and once as received.
    pub fn is_outgoing(&self) -> bool {
        self.pkt_type == libc::PACKET_OUTGOING
    }
}

impl<'b> Iterator for Frames<'b> {
    type Item = Frame<'b>;

    fn next(&mut self) -> Option<Frame<'b>> {
        if self.left == 0 {
            return None;
        }
        // The frame header, then (at the next TPACKET_ALIGNMENT boundary) its link-layer
        // address, then the frame at `tp_mac`.
        let sll_off = size_of::<libc::tpacket3_hdr>().next_multiple_of(libc::TPACKET_ALIGNMENT);
        let hdr_len = sll_off + size_of::<libc::sockaddr_ll>();
        if !self.offset.is_multiple_of(4) || self.offset.checked_add(hdr_len)? > self.block_size {
            self.left = 0;
            return None;
        }
        // SAFETY: the header lies inside the block (checked above), which user space owns while
        // the borrowed Block lives; it is 4-byte aligned, as tpacket3_hdr needs, and is plain old
        // data.
        let h = unsafe { std::ptr::read(self.base.add(self.offset).cast::<libc::tpacket3_hdr>()) };
        let start = self.offset + h.tp_mac as usize;
        let len = h.tp_snaplen as usize;
        if start.checked_add(len)? > self.block_size {
            self.left = 0;
            return None;
        }
        // SAFETY: `start..start + len` lies inside the block (checked above); the kernel does not
        // write a user-owned block, so the bytes stay unchanged for `'b`, the borrow of the Block.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(start), len) };
        let vlan_tci =
            (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0).then_some(h.hv1.tp_vlan_tci as u16);
        // SAFETY: the address lies inside the block (checked above with the header), which
        // user space owns while the Block lives; a byte needs no alignment.
        let pkt_type = unsafe {
            std::ptr::read(
                self.base
                    .add(self.offset + sll_off + offset_of!(libc::sockaddr_ll, sll_pkttype)),
            )
        };
        self.left -= 1;
        if self.left > 0 {
            if h.tp_next_offset == 0 {
                self.left = 0;
            } else {
                self.offset += h.tp_next_offset as usize;
            }
        }
        Some(Frame {
            ts_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
            data,
            wire_len: h.tp_len,
            vlan_tci,
            pkt_type,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_send() {
        fn send<T: Send>() {}
        send::<Ring>();
    }

    #[test]
    fn default_options_are_valid() {
        check_options(&RingOptions::default()).unwrap();
    }

    #[test]
    fn bad_options_are_rejected_before_any_syscall() {
        let cases = [
            RingOptions {
                block_size: 3 * 4096,
                ..RingOptions::default()
            },
            RingOptions {
                block_size: 1024,
                ..RingOptions::default()
            },
            RingOptions {
                block_count: 0,
                ..RingOptions::default()
            },
            RingOptions {
                frame_size: 2000,
                ..RingOptions::default()
            },
            RingOptions {
                frame_size: 16,
                ..RingOptions::default()
            },
            RingOptions {
                frame_size: 3 * 1024,
                ..RingOptions::default()
            },
        ];
        for o in cases {
            let e = Ring::open("lo", o.clone()).unwrap_err();
            assert!(matches!(e, Error::InvalidOptions { .. }), "{o:?}: {e}");
        }
    }

    #[test]
    fn unknown_interface_is_one_clear_line() {
        for name in [
            "mos-no-such0",
            "",
            "a-name-far-too-long-for-linux",
            "nul\0byte",
        ] {
            let e = Ring::open(name, RingOptions::default()).unwrap_err();
            assert!(matches!(e, Error::NoSuchInterface { .. }));
            assert_eq!(e.to_string(), format!("no network interface named {name}"));
        }
    }

    #[test]
    fn status_word_offset_matches_the_kernel_layout() {
        // version (4) + offset_to_priv (4), then the 8-aligned header whose first field is it.
        assert_eq!(
            block_status_ptr(std::ptr::null_mut::<u8>().wrapping_add(0)) as usize,
            8
        );
        assert_eq!(size_of::<libc::tpacket3_hdr>(), 48);
        // TPACKET3_HDRLEN is the aligned header followed by the link-layer address.
        assert_eq!(
            libc::TPACKET3_HDRLEN,
            48 + size_of::<libc::sockaddr_ll>(),
            "the link-layer address follows the aligned frame header"
        );
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_pkttype), 10);
    }
}
