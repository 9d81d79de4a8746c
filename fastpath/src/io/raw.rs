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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PacketBuf;
    use std::time::{Duration, Instant};

    #[test]
    fn receive_queue_overflow_is_counted() {
        let Ok(mut io) = RawEspIo::open("127.0.0.1".parse().unwrap(), 64) else {
            eprintln!("skipped receive_queue_overflow_is_counted: raw sockets need CAP_NET_RAW");
            return;
        };
        io.socket().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        mmsg::set_buffer_sizes(io.socket().as_raw_fd(), 4096).unwrap();
        let drops = io.count_queue_drops().unwrap();
        let sender = RawEspIo::open("127.0.0.1".parse().unwrap(), 64).unwrap();
        let esp = [0x12u8; 1000];
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), 0);
        let meta = PacketMeta {
            src: [0, 0, 0, 0].into(),
            dst: None,
            src_port: 0,
        };
        let (mut bufs, mut metas): (Vec<PacketBuf>, _) =
            ((0..64).map(|_| PacketBuf::with_defaults()).collect(), vec![meta; 64]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while drops.get() == 0 && Instant::now() < deadline {
            // Far more than a 4 KiB queue holds, then one more once it was read.
            for _ in 0..200 {
                let _ = sender.socket().send_to(&esp, &to.into());
            }
            while io.recv_burst(&mut bufs, &mut metas, true).unwrap_or(0) > 0 {}
            let _ = sender.socket().send_to(&esp, &to.into());
            let _ = io.recv_burst(&mut bufs, &mut metas, true);
        }
        assert!(drops.get() > 0, "raw ESP receive-queue overflows counted");
    }
}
