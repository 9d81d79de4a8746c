//! Plain ESP (IP protocol 50) over a raw socket, in batches.
//!
//! Received IPv4 datagrams include their IP header, which is removed here
//! (its addresses fill the packet metadata); IPv6 raw sockets deliver the
//! payload only. On send the kernel builds the outer IP header.

use super::mmsg::{self, MmsgScratch, QueueDrops};
use crate::buf::{PacketBuf, PacketBuffer};
use crate::esp::IPPROTO_ESP;
use crate::worker::{PacketMeta, Verdict};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// A raw IP socket for protocol 50.
pub struct RawEspIo {
    sock: Socket,
    v6: bool,
    bound: Option<IpAddr>,
    rx: MmsgScratch,
    tx: MmsgScratch,
    srcs: Vec<Option<SocketAddr>>,
}

impl std::fmt::Debug for RawEspIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEspIo")
            .field("v6", &self.v6)
            .field("bound", &self.bound)
            .finish()
    }
}

impl RawEspIo {
    /// Opens a raw ESP socket of `bind`'s family, bound to it (needs CAP_NET_RAW).
    pub fn open(bind: IpAddr, batch: usize) -> io::Result<Self> {
        let v6 = bind.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(IPPROTO_ESP))))?;
        sock.bind(&SocketAddr::new(bind, 0).into())?;
        Ok(Self {
            sock,
            v6,
            bound: (!bind.is_unspecified()).then_some(bind),
            rx: MmsgScratch::new(batch),
            tx: MmsgScratch::new(batch),
            srcs: vec![None; batch.clamp(1, 1024)],
        })
    }

    /// Another handle on the same socket (a sender that does not receive
    /// copies of every ESP packet, as a second raw socket would).
    pub fn try_clone(&self, batch: usize) -> io::Result<Self> {
        Ok(Self {
            sock: self.sock.try_clone()?,
            v6: self.v6,
            bound: self.bound,
            rx: MmsgScratch::new(batch),
            tx: MmsgScratch::new(batch),
            srcs: vec![None; batch.clamp(1, 1024)],
        })
    }

    /// The underlying socket.
    pub fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Counts the packets the kernel drops because the socket's receive
    /// queue is full (`SO_RXQ_OVFL`); the count is updated as packets are received.
    pub fn count_queue_drops(&self) -> io::Result<QueueDrops> {
        mmsg::enable_rxq_ovfl(self.sock.as_raw_fd())?;
        Ok(self.rx.queue_drops().clone())
    }

    /// Receives a batch of ESP packets (starting at the SPI) into `bufs`.
    /// IPv4 packets with a malformed IP header come back empty.
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf], meta: &mut [PacketMeta], wait: bool) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(self.srcs.len());
        let got = mmsg::recv_batch(
            self.sock.as_raw_fd(),
            &mut bufs[..n],
            &mut self.srcs[..n],
            &mut self.rx,
            wait,
        )?;
        for i in 0..got {
            let src = self.srcs[i].map(|a| a.ip());
            let mut m = PacketMeta {
                src: src.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                dst: self.bound,
                src_port: 0,
            };
            if !self.v6 {
                let d = bufs[i].data();
                let ihl = d.first().map(|b| usize::from(b & 0x0f) * 4).unwrap_or(0);
                if d.len() >= 20 && ihl >= 20 && ihl <= d.len() && d[0] >> 4 == 4 {
                    m.src = IpAddr::from([d[12], d[13], d[14], d[15]]);
                    m.dst = Some(IpAddr::from([d[16], d[17], d[18], d[19]]));
                    let _ = bufs[i].trim_front(ihl);
                } else {
                    let n = bufs[i].len();
                    let _ = bufs[i].trim_back(n);
                }
            }
            meta[i] = m;
        }
        Ok(got)
    }

    /// Sends ESP packets `(esp, destination address)`; returns how many were sent.
    pub fn send_burst<'a>(&mut self, items: impl IntoIterator<Item = (&'a [u8], IpAddr)>) -> io::Result<usize> {
        let items = items.into_iter().map(|(d, a)| (d, SocketAddr::new(a, 0)));
        mmsg::send_batch(self.sock.as_raw_fd(), items, &mut self.tx)
    }

    /// Sends every packet whose verdict is [`Verdict::ToPeer`] without UDP encapsulation.
    pub fn send_verdicts(&mut self, bufs: &[PacketBuf], verdicts: &[Verdict]) -> io::Result<usize> {
        let items = bufs.iter().zip(verdicts).filter_map(|(b, v)| match v {
            Verdict::ToPeer { dst, udp: None, .. } => Some((b.data(), SocketAddr::new(*dst, 0))),
            _ => None,
        });
        mmsg::send_batch(self.sock.as_raw_fd(), items, &mut self.tx)
    }
}
