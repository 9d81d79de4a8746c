//! `recvmmsg`/`sendmmsg` batches on a socket file descriptor.
//!
//! This module holds the unsafe code of the socket backends: the kernel is
//! handed pointers into caller-owned packet buffers and into preallocated
//! header arrays. The pointers are rebuilt on every call from live borrows
//! and are not used after the call returns.

use crate::buf::PacketBuf;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Preallocated message headers for batches of up to `capacity` packets.
pub struct MmsgScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

// SAFETY: the raw pointers inside the headers are only meaningful during a
// call that rebuilt them from borrows it holds; between calls they are inert.
unsafe impl Send for MmsgScratch {}

impl MmsgScratch {
    /// Scratch space for batches of `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1024);
        // SAFETY: these C structs are plain data; all-zero is a valid value.
        let (hdr, iov, addr) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        Self {
            hdrs: vec![hdr; capacity],
            iovs: vec![iov; capacity],
            addrs: vec![addr; capacity],
        }
    }

    /// Largest batch.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }
}

/// Converts a kernel socket address to a std one.
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in, which it is large enough for.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes a std socket address into kernel form; returns its length.
fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Receives up to `bufs.len()` datagrams into `bufs` (after their headroom).
/// `srcs[i]` gets the sender of `bufs[i]`. With `wait`, blocks until at least
/// one datagram arrives (`MSG_WAITFORONE`); otherwise returns `WouldBlock`
/// when none is queued. Truncated datagrams are returned with length 0.
pub fn recv_batch(
    fd: RawFd,
    bufs: &mut [PacketBuf],
    srcs: &mut [Option<SocketAddr>],
    scratch: &mut MmsgScratch,
    wait: bool,
) -> io::Result<usize> {
    let n = bufs.len().min(srcs.len()).min(scratch.capacity());
    if n == 0 {
        return Ok(0);
    }
    for (i, buf) in bufs.iter_mut().take(n).enumerate() {
        let area = buf.receive_area();
        scratch.iovs[i] = libc::iovec {
            iov_base: area.as_mut_ptr().cast(),
            iov_len: area.len(),
        };
        let h = &mut scratch.hdrs[i];
        h.msg_hdr.msg_name = (&mut scratch.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_hdr.msg_iov = &mut scratch.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = std::ptr::null_mut();
        h.msg_hdr.msg_controllen = 0;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }
    let flags = if wait {
        libc::MSG_WAITFORONE
    } else {
        libc::MSG_DONTWAIT
    };
    // SAFETY: hdrs[..n] point at iovecs and addresses in `scratch` and at the
    // receive areas of `bufs`, all borrowed mutably for this call.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            scratch.hdrs.as_mut_ptr(),
            n as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = r as usize;
    for i in 0..got {
        let h = &scratch.hdrs[i];
        let len = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            0
        } else {
            h.msg_len as usize
        };
        bufs[i]
            .set_received_len(len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        srcs[i] = from_storage(&scratch.addrs[i]);
    }
    Ok(got)
}

/// Sends up to `scratch.capacity()` datagrams from `items` (payload,
/// destination); returns how many the kernel accepted. Items beyond the
/// returned count were not sent.
pub fn send_batch<'a>(
    fd: RawFd,
    items: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
    scratch: &mut MmsgScratch,
) -> io::Result<usize> {
    let mut n = 0;
    for (data, dst) in items.into_iter().take(scratch.capacity()) {
        scratch.iovs[n] = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let namelen = to_storage(dst, &mut scratch.addrs[n]);
        let h = &mut scratch.hdrs[n];
        h.msg_hdr.msg_name = (&mut scratch.addrs[n] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = &mut scratch.iovs[n];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = std::ptr::null_mut();
        h.msg_hdr.msg_controllen = 0;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: hdrs[..n] point at addresses in `scratch` and at payloads
    // borrowed for 'a, which outlives this call; the kernel only reads them.
    let r = unsafe { libc::sendmmsg(fd, scratch.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// The IP of a socket address, for packet metadata.
pub fn ip_of(a: Option<SocketAddr>) -> Option<IpAddr> {
    a.map(|a| a.ip())
}
