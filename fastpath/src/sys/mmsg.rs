//! The socket calls of the software backends, behind safe functions:
//! `recvmmsg`/`sendmmsg` batches, their control messages and `setsockopt`.
//! The kernel is handed pointers into caller-owned packet buffers and into
//! preallocated header arrays; the pointers are rebuilt on every call from
//! live borrows and are not used after the call returns. The public items
//! are re-exported by [`crate::io::mmsg`].

use crate::buf::PacketBuf;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Preallocated message headers for batches of up to `capacity` packets.
pub struct MmsgScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<CmsgBuf>,
    drops: QueueDrops,
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
            cmsgs: vec![CmsgBuf([0; CMSG_ROOM]); capacity],
            drops: QueueDrops::default(),
        }
    }

    /// Largest batch.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Where [`recv_batch`] records the socket's receive-queue drops (after [`enable_rxq_ovfl`]).
    pub fn queue_drops(&self) -> &QueueDrops {
        &self.drops
    }

    /// Records receive-queue drops in `drops` instead (several scratches of one socket share one count).
    pub fn set_queue_drops(&mut self, drops: QueueDrops) {
        self.drops = drops;
    }
}

/// Datagrams the kernel dropped because a socket's receive queue was full:
/// the socket's count as `SO_RXQ_OVFL` last reported it, shared with
/// whoever reports it (metrics). The kernel reports the count with the next
/// datagram received, so drops show once traffic resumes.
#[derive(Debug, Clone, Default)]
pub struct QueueDrops(Arc<AtomicU64>);

impl QueueDrops {
    /// Datagrams dropped so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Notes the socket's cumulative count (it only grows).
    fn note(&self, count: u32) {
        self.0.fetch_max(u64::from(count), Ordering::Relaxed);
    }
}

/// Asks the kernel to report, with each datagram received, how many it
/// dropped for want of room in the socket's receive queue (`SO_RXQ_OVFL`);
/// [`recv_batch`] and [`recv_gro_batch`] record it in their scratch's [`QueueDrops`].
pub fn enable_rxq_ovfl(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// `setsockopt` of an `int` option.
fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a live local of that size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Walks the control messages the kernel wrote for `h`: the `SO_RXQ_OVFL`
/// drop count goes to `drops`; returns the `UDP_GRO` segment size, if any.
fn read_cmsgs(h: &libc::msghdr, drops: &QueueDrops) -> Option<usize> {
    let mut seg = None;
    if h.msg_control.is_null() || h.msg_controllen == 0 {
        return None;
    }
    // SAFETY: msg_control points at the caller's control buffer, into which
    // the kernel wrote msg_controllen bytes of control messages; the CMSG_*
    // macros walk only within them and the data reads are unaligned-safe.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_UDP, UDP_GRO) => {
                    let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    if v > 0 {
                        seg = Some(v as usize);
                    }
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    drops.note(std::ptr::read_unaligned(data.cast::<u32>()));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    seg
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
            let sin6 = unsafe { &mut *(s as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
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

/// Points `h` at one receive slot: `addr` gets the sender, `iov` the data and
/// `control` (pointer, length; null and 0 for none) the ancillary data.
fn set_recv_slot(
    h: &mut libc::mmsghdr,
    addr: &mut libc::sockaddr_storage,
    iov: &mut libc::iovec,
    control: (*mut libc::c_void, usize),
) {
    h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = control.0;
    h.msg_hdr.msg_controllen = control.1 as _;
    h.msg_hdr.msg_flags = 0;
    h.msg_len = 0;
}

/// `recvmmsg` into the first `n` headers, prepared with [`set_recv_slot`];
/// returns how many datagrams arrived. With `wait`, blocks for the first.
fn recvmmsg_prepared(fd: RawFd, hdrs: &mut [libc::mmsghdr], n: usize, wait: bool) -> io::Result<usize> {
    let n = n.min(hdrs.len());
    let flags = if wait { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
    // SAFETY: hdrs[..n] were prepared by set_recv_slot to point at iovecs,
    // addresses and control buffers of the caller's scratch and at its receive
    // buffers, all mutably borrowed by the caller across this call.
    let r = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, flags, std::ptr::null_mut()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
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
        set_recv_slot(
            &mut scratch.hdrs[i],
            &mut scratch.addrs[i],
            &mut scratch.iovs[i],
            (scratch.cmsgs[i].0.as_mut_ptr().cast(), CMSG_ROOM),
        );
    }
    let got = recvmmsg_prepared(fd, &mut scratch.hdrs, n, wait)?;
    for i in 0..got {
        let h = &scratch.hdrs[i];
        read_cmsgs(&h.msg_hdr, &scratch.drops);
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

/// Sets a socket's receive and send buffers to `bytes` each, past the
/// `net.core.[rw]mem_max` limits when the process has CAP_NET_ADMIN
/// (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`), else as far as those limits allow.
pub fn set_buffer_sizes(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int_option(fd, libc::SOL_SOCKET, force, v).is_err() {
            set_int_option(fd, libc::SOL_SOCKET, plain, v)?;
        }
    }
    Ok(())
}

/// `UDP_SEGMENT` socket option / control message (linux/udp.h): UDP GSO size.
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` socket option / control message (linux/udp.h): receive coalesced datagrams.
const UDP_GRO: libc::c_int = 104;
/// Most datagrams the kernel accepts in one UDP GSO send (`UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes of one UDP GSO send (IPv4 length limit minus IP and UDP headers).
pub const GSO_MAX_BYTES: usize = 65535 - 20 - 8;
/// Room for two control messages carrying an `int` or `u16` each (a
/// `UDP_GRO` segment size and an `SO_RXQ_OVFL` count), 8-byte aligned.
const CMSG_ROOM: usize = 64;

/// Aligned room for one control message per batch entry.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_ROOM]);

/// Scratch space for [`send_gso_batch`] and [`recv_gro_batch`]: message
/// headers, one control message each, and the I/O vectors of all segments.
pub struct GsoScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<CmsgBuf>,
    drops: QueueDrops,
}

// SAFETY: as for MmsgScratch: the pointers are rebuilt on every call and inert between calls.
unsafe impl Send for GsoScratch {}

impl GsoScratch {
    /// Room for `messages` messages of up to [`GSO_MAX_SEGMENTS`] segments (for sending).
    pub fn new(messages: usize) -> Self {
        let messages = messages.clamp(1, 1024);
        // SAFETY: plain C structs; all-zero is a valid value.
        let (hdr, iov, addr) = unsafe {
            (
                zeroed::<libc::mmsghdr>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::sockaddr_storage>(),
            )
        };
        Self {
            hdrs: vec![hdr; messages],
            iovs: vec![iov; messages * GSO_MAX_SEGMENTS],
            addrs: vec![addr; messages],
            cmsgs: vec![CmsgBuf([0; CMSG_ROOM]); messages],
            drops: QueueDrops::default(),
        }
    }

    /// Most messages per call.
    pub fn capacity(&self) -> usize {
        self.hdrs.len()
    }

    /// Records receive-queue drops seen by [`recv_gro_batch`] in `drops`.
    pub fn set_queue_drops(&mut self, drops: QueueDrops) {
        self.drops = drops;
    }
}

/// Turns on `UDP_GRO`: the kernel may hand over several same-size datagrams
/// of one sender as one buffer, with the segment size in a control message
/// ([`recv_gro_batch`] reports it).
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, UDP_GRO, 1)
}

/// One UDP GSO send: `segments` go to `dst` as separate datagrams; every
/// segment but the last has length `seg_size` and the last is not longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GsoMessage {
    /// Destination.
    pub dst: SocketAddr,
    /// Index of the first segment in the caller's segment list.
    pub first: usize,
    /// Number of segments (1..=[`GSO_MAX_SEGMENTS`]).
    pub count: usize,
    /// Length of every segment but the last.
    pub seg_size: usize,
}

/// Sends `msgs` (from [`crate::io::mmsg::plan_gso`]) over `segments` with one `sendmmsg`;
/// a message of several segments carries a `UDP_SEGMENT` control message.
/// Returns how many messages the kernel accepted (at most `scratch.capacity()`).
pub fn send_gso_batch(
    fd: RawFd,
    segments: &[(&[u8], SocketAddr)],
    msgs: &[GsoMessage],
    scratch: &mut GsoScratch,
) -> io::Result<usize> {
    let n = msgs.len().min(scratch.capacity());
    if n == 0 {
        return Ok(0);
    }
    let mut iov_at = 0;
    for (k, m) in msgs[..n].iter().enumerate() {
        let segs = segments
            .get(m.first..m.first + m.count)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "GSO message outside the segment list"))?;
        if m.count > GSO_MAX_SEGMENTS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many GSO segments"));
        }
        for (j, (data, _)) in segs.iter().enumerate() {
            scratch.iovs[iov_at + j] = libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            };
        }
        let namelen = to_storage(m.dst, &mut scratch.addrs[k]);
        let h = &mut scratch.hdrs[k];
        h.msg_hdr.msg_name = (&mut scratch.addrs[k] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = &mut scratch.iovs[iov_at];
        h.msg_hdr.msg_iovlen = m.count as _;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
        if m.count > 1 {
            let seg = u16::try_from(m.seg_size)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "GSO segment too large"))?;
            let buf = &mut scratch.cmsgs[k].0;
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
            let (space, len) = unsafe {
                (
                    libc::CMSG_SPACE(size_of::<u16>() as u32) as usize,
                    libc::CMSG_LEN(size_of::<u16>() as u32) as usize,
                )
            };
            buf.fill(0);
            h.msg_hdr.msg_control = buf.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = space as _;
            // SAFETY: msg_control points at CMSG_ROOM >= `space` aligned bytes
            // owned by `scratch`; CMSG_FIRSTHDR/CMSG_DATA stay inside them.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = len as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            }
        } else {
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
        }
        iov_at += m.count;
    }
    // SAFETY: hdrs[..n] point at addresses, control messages and iovecs in
    // `scratch` and at payloads borrowed from `segments` for this call; the
    // kernel only reads them.
    let r = unsafe { libc::sendmmsg(fd, scratch.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// A datagram (or, with `UDP_GRO`, a train of same-size datagrams) received by [`recv_gro_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroDatagram {
    /// Bytes received into the buffer.
    pub len: usize,
    /// Size of each coalesced datagram (the last may be shorter); `len` when not coalesced.
    pub seg_size: usize,
    /// Sender.
    pub src: Option<SocketAddr>,
}

/// Receives up to `bufs.len()` messages into the large buffers `bufs` with
/// `recvmmsg`, reading the `UDP_GRO` segment size of each. With `wait`,
/// blocks for the first one. Truncated messages are reported with length 0.
pub fn recv_gro_batch(
    fd: RawFd,
    bufs: &mut [Vec<u8>],
    out: &mut [GroDatagram],
    scratch: &mut GsoScratch,
    wait: bool,
) -> io::Result<usize> {
    let n = bufs.len().min(out.len()).min(scratch.capacity());
    if n == 0 {
        return Ok(0);
    }
    for (i, buf) in bufs.iter_mut().take(n).enumerate() {
        scratch.iovs[i] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        set_recv_slot(
            &mut scratch.hdrs[i],
            &mut scratch.addrs[i],
            &mut scratch.iovs[i],
            (scratch.cmsgs[i].0.as_mut_ptr().cast(), CMSG_ROOM),
        );
    }
    let got = recvmmsg_prepared(fd, &mut scratch.hdrs, n, wait)?;
    for i in 0..got {
        let h = &scratch.hdrs[i].msg_hdr;
        let len = if h.msg_flags & libc::MSG_TRUNC != 0 {
            0
        } else {
            (scratch.hdrs[i].msg_len as usize).min(bufs[i].len())
        };
        let seg_size = read_cmsgs(h, &scratch.drops).unwrap_or(len);
        out[i] = GroDatagram {
            len,
            seg_size,
            src: from_storage(&scratch.addrs[i]),
        };
    }
    Ok(got)
}
