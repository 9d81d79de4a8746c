//! ESP-in-UDP and IKE on port 4500 (RFC 3948) over a UDP socket, in batches.

use super::mmsg::{self, GroDatagram, GsoMessage, GsoScratch, MmsgScratch, QueueDrops};
use crate::buf::{PacketBuf, PacketBuffer};
use crate::worker::{NON_ESP_MARKER_LEN, PacketMeta, Verdict};
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
    /// UDP GSO send state, when enabled.
    gso: Option<GsoTx>,
    /// UDP GRO (or large-buffer) receive state, when enabled.
    gro: Option<GroRx>,
    /// IKE messages (non-ESP marker removed) too large for a packet buffer,
    /// with their senders: see [`UdpIo::drain_large_ike`].
    large_ike: Vec<(SocketAddr, Vec<u8>)>,
    /// Receive-queue drops of the socket (see [`UdpIo::count_queue_drops`]).
    drops: QueueDrops,
}

/// Send side of UDP GSO: runs of equal-size datagrams to one peer leave in one message.
struct GsoTx {
    scratch: GsoScratch,
    plan: Vec<GsoMessage>,
}

/// Receive side of UDP GRO: large buffers and the datagrams not yet handed out.
struct GroRx {
    scratch: GsoScratch,
    bufs: Vec<Vec<u8>>,
    got: Vec<GroDatagram>,
    /// Received messages in `bufs`/`got`.
    count: usize,
    /// Message being cut into datagrams, and the offset of its next datagram.
    cur: usize,
    off: usize,
}

/// Size of one GRO receive buffer (the largest UDP payload).
const GRO_BUF_LEN: usize = 65536;

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
        Self::from_socket(sock.into(), batch)
    }

    /// Wraps an already bound socket (e.g. a clone of another worker's, so a
    /// sender does not join the port's SO_REUSEPORT receive group).
    pub fn from_socket(sock: UdpSocket, batch: usize) -> io::Result<Self> {
        let local = sock.local_addr()?;
        let drops = QueueDrops::default();
        let mut rx = MmsgScratch::new(batch);
        rx.set_queue_drops(drops.clone());
        Ok(Self {
            sock,
            local,
            rx,
            tx: MmsgScratch::new(batch),
            srcs: vec![None; batch.clamp(1, 1024)],
            gso: None,
            gro: None,
            large_ike: Vec::new(),
            drops,
        })
    }

    /// Counts the datagrams the kernel drops because the socket's receive
    /// queue is full (`SO_RXQ_OVFL`); the count is updated as datagrams are received.
    pub fn count_queue_drops(&self) -> io::Result<QueueDrops> {
        mmsg::enable_rxq_ovfl(self.sock.as_raw_fd())?;
        Ok(self.drops.clone())
    }

    /// Sends runs of equal-size datagrams to one peer as one UDP GSO message
    /// (`UDP_SEGMENT`, Linux ≥ 4.18): one trip through the kernel's UDP/IP
    /// stack for up to 64 ESP packets. Falls back to plain sends by itself
    /// if the kernel refuses.
    pub fn enable_gso(&mut self) {
        self.gso = Some(GsoTx {
            scratch: GsoScratch::new(self.tx.capacity()),
            plan: Vec::with_capacity(self.tx.capacity()),
        });
    }

    /// Lets the kernel coalesce datagrams of one sender (`UDP_GRO`, Linux ≥
    /// 5.0); [`UdpIo::recv_burst`] cuts them apart again, so callers see the
    /// same datagrams as without it. `messages` large buffers (64 KiB each)
    /// are received per call.
    pub fn enable_gro(&mut self, messages: usize) -> io::Result<()> {
        mmsg::enable_udp_gro(self.sock.as_raw_fd())?;
        self.enable_large_receive(messages);
        Ok(())
    }

    /// Receives into `messages` buffers of 64 KiB (the largest UDP payload)
    /// and copies each datagram into the caller's packet buffers, so that an
    /// IKE message too large for a packet buffer still arrives whole
    /// ([`UdpIo::drain_large_ike`]); [`UdpIo::enable_gro`] does this too.
    pub fn enable_large_receive(&mut self, messages: usize) {
        let messages = messages.clamp(1, 64);
        let mut scratch = GsoScratch::new(messages);
        scratch.set_queue_drops(self.drops.clone());
        self.gro = Some(GroRx {
            scratch,
            bufs: (0..messages).map(|_| vec![0u8; GRO_BUF_LEN]).collect(),
            got: vec![
                GroDatagram {
                    len: 0,
                    seg_size: 0,
                    src: None
                };
                messages
            ],
            count: 0,
            cur: 0,
            off: 0,
        });
    }

    /// IKE messages (behind the non-ESP marker, which is removed) that
    /// [`UdpIo::recv_burst`] received but that are too large for a packet
    /// buffer, with their senders. Needs [`UdpIo::enable_large_receive`] or
    /// [`UdpIo::enable_gro`]; without, such datagrams come back empty.
    pub fn drain_large_ike(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.large_ike.drain(..)
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
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf], meta: &mut [PacketMeta], wait: bool) -> io::Result<usize> {
        if self.gro.is_some() {
            return self.recv_burst_gro(bufs, meta, wait);
        }
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

    /// [`UdpIo::recv_burst`] with GRO: hands out the datagrams of messages
    /// received earlier first, receives more only when none are left.
    fn recv_burst_gro(&mut self, bufs: &mut [PacketBuf], meta: &mut [PacketMeta], wait: bool) -> io::Result<usize> {
        let n = bufs.len().min(meta.len());
        let dst = (!self.local.ip().is_unspecified()).then_some(self.local.ip());
        let local = self.local.ip();
        let fd = self.sock.as_raw_fd();
        let large_ike = &mut self.large_ike;
        let Some(g) = self.gro.as_mut() else {
            return Ok(0);
        };
        let mut filled = 0;
        while filled < n {
            if g.cur >= g.count {
                // Nothing left: receive (block only while nothing was handed out).
                let handed_out = filled > 0 || !large_ike.is_empty();
                let block = wait && !handed_out;
                g.count = match mmsg::recv_gro_batch(fd, &mut g.bufs, &mut g.got, &mut g.scratch, block) {
                    Ok(c) => c,
                    Err(e) if handed_out && e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) if handed_out && e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(e) => {
                        g.count = 0;
                        return Err(e);
                    }
                };
                g.cur = 0;
                g.off = 0;
                if g.count == 0 {
                    break;
                }
            }
            let d = g.got[g.cur];
            let (src, src_port) = match d.src {
                Some(a) => (a.ip(), a.port()),
                None => (local, 0),
            };
            // A truncated message (length 0) is handed out once, empty.
            let end = if d.len == 0 {
                0
            } else {
                (g.off + d.seg_size.max(1)).min(d.len)
            };
            let seg = &g.bufs[g.cur][g.off..end];
            let area = bufs[filled].receive_area();
            g.off = end;
            if g.off >= d.len {
                g.cur += 1;
                g.off = 0;
            }
            let len = if seg.len() <= area.len() {
                area[..seg.len()].copy_from_slice(seg);
                seg.len()
            } else if let (Some(from), Some(ike)) = (d.src, seg.strip_prefix(&[0u8; NON_ESP_MARKER_LEN])) {
                // IKE larger than a packet buffer (a certificate chain, unfragmented).
                large_ike.push((from, ike.to_vec()));
                continue;
            } else {
                0 // larger than a packet buffer: reported like a truncated datagram
            };
            bufs[filled]
                .set_received_len(len)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            meta[filled] = PacketMeta { src, dst, src_port };
            filled += 1;
        }
        Ok(filled)
    }

    /// Sends datagrams `(payload, destination)`; returns how many were sent.
    /// With [`UdpIo::enable_gso`], equal-size runs to one peer go out as one message each.
    pub fn send_burst<'a>(&mut self, items: impl IntoIterator<Item = (&'a [u8], SocketAddr)>) -> io::Result<usize> {
        let fd = self.sock.as_raw_fd();
        let Some(g) = self.gso.as_mut() else {
            return mmsg::send_batch(fd, items, &mut self.tx);
        };
        let items: Vec<(&[u8], SocketAddr)> = items.into_iter().collect();
        g.plan.clear();
        mmsg::plan_gso(&items, &mut g.plan);
        let msgs = g.plan.len().min(g.scratch.capacity());
        match mmsg::send_gso_batch(fd, &items, &g.plan[..msgs], &mut g.scratch) {
            Ok(sent) => Ok(g.plan[..sent].iter().map(|m| m.count).sum()),
            // EIO: the route's device cannot segment; EINVAL/ENOPROTOOPT: no UDP GSO.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)) => {
                tracing::warn!("UDP GSO refused ({e}); sending datagrams one by one");
                self.gso = None;
                mmsg::send_batch(fd, items, &mut self.tx)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends every packet whose verdict is [`Verdict::ToPeer`] with UDP
    /// encapsulation to the peer's NAT-T address; returns how many were sent.
    pub fn send_verdicts(&mut self, bufs: &[PacketBuf], verdicts: &[Verdict]) -> io::Result<usize> {
        let items = bufs.iter().zip(verdicts).filter_map(|(b, v)| match v {
            Verdict::ToPeer { dst, udp: Some(u), .. } => Some((b.data(), SocketAddr::new(*dst, u.remote_port))),
            _ => None,
        });
        mmsg::send_batch(self.sock.as_raw_fd(), items, &mut self.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PacketBuf;
    use std::time::Duration;

    fn bufs(n: usize) -> (Vec<PacketBuf>, Vec<PacketMeta>) {
        let meta = PacketMeta {
            src: [0, 0, 0, 0].into(),
            dst: None,
            src_port: 0,
        };
        ((0..n).map(|_| PacketBuf::with_defaults()).collect(), vec![meta; n])
    }

    /// Receives until `pred` holds or a second passes.
    fn recv_until(io: &mut UdpIo, mut pred: impl FnMut(&mut UdpIo, usize) -> bool) {
        let (mut b, mut m) = bufs(64);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            let n = io.recv_burst(&mut b, &mut m, true).unwrap_or(0);
            if pred(io, n) {
                return;
            }
        }
    }

    #[test]
    fn ike_larger_than_a_packet_buffer_arrives_whole() {
        let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 8).unwrap();
        io.socket().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        io.enable_large_receive(4);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut ike = vec![0u8; NON_ESP_MARKER_LEN];
        ike.extend((0..60_000u32).map(|i| (i % 251) as u8 | 1));
        client.send_to(&ike, io.local_addr()).unwrap();
        // ESP of normal size next to it still goes to the packet buffers.
        client.send_to(&[1u8; 200], io.local_addr()).unwrap();
        let mut large = Vec::new();
        let mut esp = 0;
        recv_until(&mut io, |io, n| {
            esp += n;
            large.extend(io.drain_large_ike());
            !large.is_empty() && esp > 0
        });
        assert_eq!(large.len(), 1, "one large IKE message");
        assert_eq!(large[0].0, client.local_addr().unwrap());
        assert_eq!(large[0].1, ike[NON_ESP_MARKER_LEN..], "the message without its marker");
        assert_eq!(esp, 1);
    }

    #[test]
    fn receive_queue_overflow_is_counted() {
        for large in [false, true] {
            let mut io = UdpIo::bind("127.0.0.1:0".parse().unwrap(), 64).unwrap();
            io.socket().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            if large {
                io.enable_large_receive(4);
            }
            mmsg::set_buffer_sizes(io.socket().as_raw_fd(), 4096).unwrap();
            let drops = io.count_queue_drops().unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Far more than a 4 KiB queue holds, none read meanwhile.
            for _ in 0..200 {
                client.send_to(&[1u8; 1000], io.local_addr()).unwrap();
            }
            recv_until(&mut io, |_, n| n == 0);
            // The kernel reports the count with the next datagram queued.
            client.send_to(&[1u8; 1000], io.local_addr()).unwrap();
            recv_until(&mut io, |_, _| drops.get() > 0);
            assert!(
                drops.get() > 100,
                "drops counted (large receive: {large}): {}",
                drops.get()
            );
        }
    }
}
