//! `region::Mapping` on a memfd: typed views and their refusals, byte ranges, and the kernel
//! refusing write access to a read-only mapping of a read-only descriptor.
#![cfg(not(loom))]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use shm_layout::layout::{ConsumerIndex, EventSlot, PktLogHeader};
use shm_layout::region::Mapping;

const LEN: usize = 3 * 4096;

fn memfd() -> OwnedFd {
    let fd = rustix::fs::memfd_create("shm-layout-test", MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, LEN as u64).unwrap();
    fd
}

/// The memfd reopened read-only through `/proc/self/fd`, as the sensor hands it to analyzers.
fn reopen_read_only(fd: &OwnedFd) -> OwnedFd {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap()
}

#[test]
fn typed_views_check_bounds_and_alignment() {
    let fd = memfd();
    let m = Mapping::map(fd.as_fd(), LEN, true, false).unwrap();
    assert_eq!(m.len(), LEN);
    assert!(m.writable() && !m.is_empty());
    assert!(m.get::<ConsumerIndex>(0).is_some());
    assert!(m.get::<ConsumerIndex>(LEN - 64).is_some());
    assert!(m.get::<ConsumerIndex>(LEN - 32).is_none(), "past the end");
    assert!(
        m.get::<ConsumerIndex>(usize::MAX).is_none(),
        "offset overflow"
    );
    assert!(
        m.get::<ConsumerIndex>(8).is_none(),
        "misaligned (64-byte type)"
    );
    assert!(m.get::<PktLogHeader>(64).is_some());
    let n = LEN / core::mem::size_of::<EventSlot>();
    assert_eq!(m.slice::<EventSlot>(0, n).unwrap().len(), n);
    assert!(m.slice::<EventSlot>(0, n + 1).is_none(), "past the end");
    assert!(m.slice::<EventSlot>(4, 1).is_none(), "misaligned");
    assert!(
        m.slice::<EventSlot>(0, usize::MAX).is_none(),
        "size overflow"
    );
    // What one view writes, another sees.
    let a = m.get::<ConsumerIndex>(64).unwrap();
    a.index.store(42, std::sync::atomic::Ordering::Relaxed);
    let mut b = [0u8; 8];
    assert!(m.read_bytes(64, &mut b));
    assert_eq!(u64::from_ne_bytes(b), 42);
}

#[test]
fn byte_ranges_are_taken_once_and_never_overlap_a_view() {
    let fd = memfd();
    let mut m = Mapping::map(fd.as_fd(), LEN, true, false).unwrap();
    assert!(m.get_mut::<ConsumerIndex>(0).is_some());
    let bytes = m.take_bytes(4096, 4096).unwrap();
    bytes[0] = 7;
    assert!(m.take_bytes(4096, 1).is_none(), "taken twice");
    assert!(m.take_bytes(4000, 100).is_none(), "overlaps the start");
    assert!(m.take_bytes(8191, 10).is_none(), "overlaps the end");
    assert!(m.take_bytes(2 * 4096, 4097).is_none(), "past the end");
    assert!(m.take_bytes(usize::MAX, 2).is_none(), "offset overflow");
    assert!(m.take_bytes(8192, 100).is_some(), "adjacent is fine");
    assert!(
        m.get::<ConsumerIndex>(4096 + 64).is_none(),
        "a view into taken bytes"
    );
    assert!(
        m.slice::<EventSlot>(4096 - 96, 2).is_none(),
        "a slice reaching into them"
    );
    assert!(
        m.get::<ConsumerIndex>(4096 - 64).is_some(),
        "next to them is fine"
    );
    assert!(
        m.take_bytes(3 * 4096, 100).is_none(),
        "no bytes are taken once a shared view exists (they could alias it)"
    );
    let mut b = [0u8; 1];
    assert!(
        m.read_bytes(4096, &mut b),
        "taken bytes can still be copied"
    );
    assert_eq!(b[0], 7);
}

#[test]
fn read_bytes_checks_bounds() {
    let fd = memfd();
    let m = Mapping::map(fd.as_fd(), LEN, false, false).unwrap();
    let mut b = [1u8; 16];
    assert!(m.read_bytes(LEN - 16, &mut b));
    assert_eq!(b, [0; 16]);
    let mut b = [1u8; 16];
    assert!(!m.read_bytes(LEN - 15, &mut b));
    assert_eq!(b, [1; 16], "nothing copied");
    assert!(!m.read_bytes(usize::MAX, &mut b));
    assert!(m.read_bytes(LEN, &mut []));
}

#[test]
fn an_empty_mapping_is_refused() {
    let fd = memfd();
    assert!(Mapping::map(fd.as_fd(), 0, false, false).is_err());
}

#[test]
fn a_read_only_mapping_gives_no_write_access() {
    let fd = memfd();
    let rw = Mapping::map(fd.as_fd(), LEN, true, false).unwrap();
    let ro_fd = reopen_read_only(&fd);
    let ro = Mapping::map(ro_fd.as_fd(), LEN, false, true).unwrap();
    assert!(!ro.writable());
    assert!(ro.take_bytes(0, 1).is_none());
    // The writer's stores show through the read-only mapping.
    rw.get::<ConsumerIndex>(0)
        .unwrap()
        .index
        .store(5, std::sync::atomic::Ordering::Release);
    assert_eq!(
        ro.get::<ConsumerIndex>(0)
            .unwrap()
            .index
            .load(std::sync::atomic::Ordering::Acquire),
        5
    );
    let probe = ro.probe_write(ro_fd.as_fd());
    let code = |r: &io::Result<()>| r.as_ref().err().and_then(io::Error::raw_os_error);
    assert_eq!(code(&probe.mprotect), Some(libc::EACCES), "{probe:?}");
    assert_eq!(code(&probe.mmap), Some(libc::EACCES), "{probe:?}");
    // The probe left the mapping readable.
    let mut b = [0u8; 8];
    assert!(ro.read_bytes(0, &mut b));
    // The writable mapping is not affected.
    assert!(rw.probe_write(fd.as_fd()).mprotect.is_ok());
}

#[test]
fn a_sealed_memfd_cannot_be_reopened_for_writing() {
    let fd = memfd();
    let rw = Mapping::map(fd.as_fd(), LEN, true, false).unwrap();
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::FUTURE_WRITE | SealFlags::SHRINK | SealFlags::GROW,
    )
    .unwrap();
    // The writer's existing mapping still writes.
    rw.get::<ConsumerIndex>(0)
        .unwrap()
        .index
        .store(9, std::sync::atomic::Ordering::Relaxed);
    // A read-write reopen gets a descriptor, but neither write() nor a writable mapping.
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let again = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap();
    assert_eq!(
        rustix::io::write(&again, &[1]).unwrap_err(),
        rustix::io::Errno::PERM
    );
    let e = Mapping::map(again.as_fd(), LEN, true, false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    assert!(Mapping::map(again.as_fd(), LEN, false, false).is_ok());
}
