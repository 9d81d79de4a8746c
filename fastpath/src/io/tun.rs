//! Linux TUN devices (`IFF_TUN | IFF_NO_PI`, optionally `IFF_MULTI_QUEUE`
//! and `IFF_VNET_HDR` with segmentation offloads).
//!
//! The `TUNSETIFF` ioctl that attaches the opened `/dev/net/tun` file to a
//! named interface and the `TUNSETOFFLOAD` ioctl are wrapped in
//! `crate::sys::tun`; packets then move with plain `read`/`write`/`writev`
//! on the file.
//!
//! With offloads ([`TunOptions::offload`]) every packet is preceded by a
//! virtio-net header: reads return TCP/UDP super-packets of up to 64 KiB
//! that [`Tun::recv_segments`] cuts into MTU-sized packets (see
//! [`super::gso`]), and [`Tun::send_batch`] merges in-order TCP segments
//! into super-packets before writing them.

use super::gso::{self, TcpCoalescer, VNET_HDR_LEN, VirtioNetHdr};
use crate::buf::PacketBuf;
use crate::sys::{self, tun::IfReqFlags};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

/// Offloads requested with [`TunOptions::offload`]: checksum, TSO for IPv4
/// and IPv6, and UDP segmentation (USO) where the kernel has it.
const OFFLOADS: [libc::c_uint; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
];

/// How to open a TUN queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunOptions {
    /// Add a queue to a multi-queue device (`IFF_MULTI_QUEUE`).
    pub multi_queue: bool,
    /// Virtio-net header and TSO/USO/checksum offloads (`IFF_VNET_HDR` + `TUNSETOFFLOAD`).
    pub offload: bool,
}

/// One queue of a TUN device.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    vnet_hdr: bool,
    offloads: libc::c_uint,
    gro: TcpCoalescer,
}

impl Tun {
    /// Creates (or attaches to) TUN interface `name`; with `multi_queue`, each
    /// call adds a queue to the same device. Needs CAP_NET_ADMIN.
    pub fn open(name: &str, multi_queue: bool) -> io::Result<Self> {
        Self::open_with(
            name,
            TunOptions {
                multi_queue,
                offload: false,
            },
        )
    }

    /// Like [`Tun::open`], with the options in `opts`. All queues of one
    /// device must be opened with the same options.
    pub fn open_with(name: &str, opts: TunOptions) -> io::Result<Self> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface name must be 1..15 bytes",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags::new(name, (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short)?;
        if opts.multi_queue {
            req.flags |= libc::IFF_MULTI_QUEUE as libc::c_short;
        }
        if opts.offload {
            req.flags |= libc::IFF_VNET_HDR as libc::c_short;
        }
        sys::tun::set_iff(&file, &mut req)?;
        let len = req.name.iter().position(|b| *b == 0).unwrap_or(libc::IFNAMSIZ);
        let mut offloads = 0;
        if opts.offload {
            for want in OFFLOADS {
                if sys::tun::set_offload(&file, want).is_ok() {
                    offloads = want;
                    break;
                }
            }
        }
        Ok(Self {
            file,
            name: String::from_utf8_lossy(&req.name[..len]).into_owned(),
            vnet_hdr: opts.offload,
            offloads,
            gro: TcpCoalescer::new(),
        })
    }

    /// Another handle on the same queue (for a thread that only writes).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
            vnet_hdr: self.vnet_hdr,
            offloads: self.offloads,
            gro: TcpCoalescer::new(),
        })
    }

    /// True when packets on this queue carry a virtio-net header.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The `TUN_F_*` offload bits the kernel accepted (0 without offloads).
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// The interface name the kernel assigned.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying file (polling, non-blocking mode).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Switches the queue between blocking and non-blocking reads.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let mut flags = OFlag::from_bits_retain(fcntl(&self.file, FcntlArg::F_GETFL)?);
        flags.set(OFlag::O_NONBLOCK, on);
        fcntl(&self.file, FcntlArg::F_SETFL(flags))?;
        Ok(())
    }

    /// Reads one packet as the device delivers it (with the virtio-net
    /// header when [`Tun::has_vnet_hdr`]) into `scratch`; returns its length.
    pub fn recv_raw(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        self.file.read(scratch)
    }

    /// Cuts a packet read by [`Tun::recv_raw`] into IP packets in `out`
    /// (GSO; a packet without a virtio-net header is copied as is). Returns
    /// how many buffers were filled; [`gso::segment_count`] tells how many
    /// are needed.
    pub fn recv_segments(&self, raw: &[u8], out: &mut [PacketBuf]) -> Result<usize, gso::GsoError> {
        if !self.vnet_hdr {
            let b = out.first_mut().ok_or(gso::GsoError::NoRoom)?;
            b.set_data(raw).map_err(|_| gso::GsoError::NoRoom)?;
            return Ok(1);
        }
        let h = VirtioNetHdr::parse(raw)?;
        gso::segment(&h, &raw[VNET_HDR_LEN..], out)
    }

    /// How many IP packets [`Tun::recv_segments`] makes of `raw`.
    pub fn segments_needed(&self, raw: &[u8]) -> Result<usize, gso::GsoError> {
        if !self.vnet_hdr {
            return Ok(1);
        }
        let h = VirtioNetHdr::parse(raw)?;
        gso::segment_count(&h, &raw[VNET_HDR_LEN..])
    }

    /// Writes IP packets, merging runs of in-order TCP segments of one flow
    /// into super-packets when the device has offloads (GRO). Returns how
    /// many packets the kernel refused (each failed write is counted with
    /// the packets it held).
    pub fn send_batch(&mut self, pkts: &[&[u8]]) -> usize {
        let mut failed = 0;
        if !self.vnet_hdr || self.offloads & libc::TUN_F_TSO4 == 0 {
            let plain = [0u8; VNET_HDR_LEN];
            for p in pkts {
                let r = if self.vnet_hdr {
                    self.file.write_vectored(&[IoSlice::new(&plain), IoSlice::new(p)])
                } else {
                    self.file.write(p)
                };
                if r.is_err() {
                    failed += 1;
                }
            }
            return failed;
        }
        let mut i = 0;
        while i < pkts.len() {
            let k = TcpCoalescer::run_len(&pkts[i..]).max(1);
            let w = self.gro.build(&pkts[i..i + k]);
            let mut iov = Vec::with_capacity(w.payloads.len() + 1);
            iov.push(IoSlice::new(w.head));
            iov.extend(w.payloads.iter().map(|p| IoSlice::new(p)));
            let want: usize = iov.iter().map(|s| s.len()).sum();
            match self.file.write_vectored(&iov) {
                Ok(n) if n == want => {}
                _ => failed += k,
            }
            i += k;
        }
        failed
    }

    /// Reads one IP packet into `buf` (after its headroom). With a
    /// virtio-net header the header is dropped, so use this only on queues
    /// without offloads (super-packets need [`Tun::recv_segments`]).
    pub fn recv(&mut self, buf: &mut PacketBuf) -> io::Result<usize> {
        let n = self.file.read(buf.receive_area())?;
        buf.set_received_len(n)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if self.vnet_hdr {
            use crate::buf::PacketBuffer;
            buf.trim_front(VNET_HDR_LEN.min(n))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            return Ok(n.saturating_sub(VNET_HDR_LEN));
        }
        Ok(n)
    }

    /// Reads packets until `bufs` is full or none is queued (non-blocking
    /// mode); returns how many were read.
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs.iter_mut() {
            match self.recv(b) {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Writes one IP packet (with a plain virtio-net header when the queue has one).
    pub fn send(&mut self, pkt: &[u8]) -> io::Result<()> {
        let (n, want) = if self.vnet_hdr {
            let plain = [0u8; VNET_HDR_LEN];
            let n = self.file.write_vectored(&[IoSlice::new(&plain), IoSlice::new(pkt)])?;
            (n, VNET_HDR_LEN + pkt.len())
        } else {
            (self.file.write(pkt)?, pkt.len())
        };
        if n != want {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short TUN write"));
        }
        Ok(())
    }
}
