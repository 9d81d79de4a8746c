//! ESP-in-UDP and IKE on port 4500 (RFC 3948) over a UDP socket, in batches.

use super::mmsg::{self, MmsgScratch};
use crate::buf::{PacketBuf, PacketBuffer};
use crate::worker::{PacketMeta, Verdict};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// A UDP socket (normally bound to port 4500) with batch receive and send.
pub struct UdpIo {
    sock: UdpSocket,
    local: SocketAddr,
    rx: MmsgScratch,
    tx: MmsgScratch,
    srcs: Vec<Option<SocketAddr>>,
}

impl std::fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIo").field("local", &self.local).finish()
    }
}

impl UdpIo {
    /// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (one socket per
    /// worker on the same port), for batches of up to `batch` packets.
    pub fn bind(addr: SocketAddr, batch: usize) -> io::Result<Self> {
        let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.bind(&addr.into())?;
        let sock: UdpSocket = sock.into();
        let local = sock.local_addr()?;
        Ok(Self {
            sock,
            local,
            rx: MmsgScratch::new(batch),
            tx: MmsgScratch::new(batch),
            srcs: vec![None; batch.clamp(1, 1024)],
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The underlying socket (timeouts, non-blocking mode, polling).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Receives a batch into `bufs`, filling `meta` for each packet. With
    /// `wait`, blocks (subject to the socket's read timeout) for the first one.
    pub fn recv_burst(
        &mut self,
        bufs: &mut [PacketBuf],
        meta: &mut [PacketMeta],
        wait: bool,
    ) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(self.srcs.len());
        let got = mmsg::recv_batch(
            self.sock.as_raw_fd(),
            &mut bufs[..n],
            &mut self.srcs[..n],
            &mut self.rx,
            wait,
        )?;
        let dst = (!self.local.ip().is_unspecified()).then_some(self.local.ip());
        for (m, s) in meta.iter_mut().zip(&self.srcs[..got]) {
            let (src, src_port) = match s {
                Some(a) => (a.ip(), a.port()),
                None => (self.local.ip(), 0),
            };
            *m = PacketMeta { src, dst, src_port };
        }
        Ok(got)
    }

    /// Sends datagrams `(payload, destination)`; returns how many were sent.
    pub fn send_burst<'a>(
        &mut self,
        items: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
    ) -> io::Result<usize> {
        mmsg::send_batch(self.sock.as_raw_fd(), items, &mut self.tx)
    }

    /// Sends every packet whose verdict is [`Verdict::ToPeer`] with UDP
    /// encapsulation to the peer's NAT-T address; returns how many were sent.
    pub fn send_verdicts(&mut self, bufs: &[PacketBuf], verdicts: &[Verdict]) -> io::Result<usize> {
        let items = bufs.iter().zip(verdicts).filter_map(|(b, v)| match v {
            Verdict::ToPeer {
                dst, udp: Some(u), ..
            } => Some((b.data(), SocketAddr::new(*dst, u.remote_port))),
            _ => None,
        });
        mmsg::send_batch(self.sock.as_raw_fd(), items, &mut self.tx)
    }
}
