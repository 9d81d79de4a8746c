//! Linux TUN devices (`IFF_TUN | IFF_NO_PI`, optionally `IFF_MULTI_QUEUE`).
//!
//! The only unsafe code is the `TUNSETIFF` ioctl that attaches the opened
//! `/dev/net/tun` file to a named interface; packets then move with plain
//! `read`/`write` on the file, one IP packet per call.

use crate::buf::PacketBuf;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// `struct ifreq` as `TUNSETIFF` reads it: name, flags, padding to 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One queue of a TUN device.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) TUN interface `name`; with `multi_queue`, each
    /// call adds a queue to the same device. Needs CAP_NET_ADMIN.
    pub fn open(name: &str, multi_queue: bool) -> io::Result<Self> {
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
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        if multi_queue {
            req.flags |= libc::IFF_MULTI_QUEUE as libc::c_short;
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags
        // lays out (name, then the flags member of the union, padded to size).
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = req
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(libc::IFNAMSIZ);
        Ok(Self {
            file,
            name: String::from_utf8_lossy(&req.name[..len]).into_owned(),
        })
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
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on an fd we own, with integer arguments only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one IP packet into `buf` (after its headroom).
    pub fn recv(&mut self, buf: &mut PacketBuf) -> io::Result<usize> {
        let n = self.file.read(buf.receive_area())?;
        buf.set_received_len(n)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
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

    /// Writes one IP packet.
    pub fn send(&mut self, pkt: &[u8]) -> io::Result<()> {
        let n = self.file.write(pkt)?;
        if n != pkt.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short TUN write"));
        }
        Ok(())
    }
}
