//! The shards' UDP sockets for IKE: datagrams are received and sent in
//! batches (`recvmmsg`/`sendmmsg`, one system call per batch), and a socket
//! bound to a wildcard address (`0.0.0.0`, `::`) learns the address each
//! datagram was sent to (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and sends each
//! reply from the address the request came to (the same control message on
//! send), so that the IKE SA records its real local address (NAT detection
//! hashes cover it) and the peer sees the answer come from where it sent.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use nix::libc;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};
use tracing::debug;

/// Datagrams read per system call.
pub const BATCH: usize = 32;
/// Largest datagram read (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// One received datagram: where it went, who sent it, its length in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Our address it was sent to (the concrete one, also on wildcard sockets).
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// Bytes in the buffer.
    pub len: usize,
}

/// Receive buffers and the metadata of the last batch.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    got: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last batch with their bytes.
    pub fn iter(&self) -> impl Iterator<Item = (Received, &[u8])> {
        self.got.iter().zip(&self.bufs).map(|(r, b)| (*r, &b[..r.len]))
    }
}

/// A datagram to send: payload after an optional non-ESP marker.
pub struct Outgoing<'a> {
    /// Our address: selects the source on a wildcard socket.
    pub local: SocketAddr,
    /// The destination.
    pub remote: SocketAddr,
    /// Prepend the 4-byte non-ESP marker (RFC 3948).
    pub marker: bool,
    /// The IKE message.
    pub data: &'a [u8],
}

/// A UDP socket used for IKE by one shard.
pub struct IkeSocket {
    /// The socket (registered with the shard's poll when the shard reads it).
    pub socket: UdpSocket,
    /// The bound address; its IP is unspecified on a wildcard socket.
    pub local: SocketAddr,
    /// True on the NAT-T port (IKE carries the non-ESP marker).
    pub nat: bool,
}

const MARKER: [u8; 4] = [0; 4];

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// The destination address of a datagram from its packet-info control message.
fn pktinfo_destination(cmsg: ControlMessageOwned) -> Option<IpAddr> {
    match cmsg {
        ControlMessageOwned::Ipv4PacketInfo(info) => {
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))))
        }
        ControlMessageOwned::Ipv6PacketInfo(info) => Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr))),
        _ => None,
    }
}

impl IkeSocket {
    /// Binds `addr` (SO_REUSEPORT, large buffers, non-blocking); a wildcard
    /// address also asks the kernel for each datagram's destination address.
    pub fn bind(addr: SocketAddr, nat: bool) -> io::Result<Self> {
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        // Our own IKE must bypass the routes into the TUN device (crate::routing);
        // without CAP_NET_ADMIN there is no mark, and then no such routes either.
        let _ = s.set_mark(crate::routing::OUTER_MARK);
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        if addr.ip().is_unspecified() {
            if addr.is_ipv4() {
                setsockopt(&s, sockopt::Ipv4PacketInfo, &true)?;
            } else {
                setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)?;
            }
        }
        s.bind(&addr.into())?;
        let socket: std::net::UdpSocket = s.into();
        // The port the kernel chose when `addr` asked for any.
        let local = SocketAddr::new(addr.ip(), socket.local_addr()?.port());
        Ok(Self {
            socket: UdpSocket::from_std(socket),
            local,
            nat,
        })
    }

    /// Wraps a socket bound elsewhere (the data plane's NAT-T sockets, which the shard only sends on).
    pub fn send_only(socket: std::net::UdpSocket, local: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::from_std(socket),
            local,
            nat: true,
        }
    }

    /// True when bound to a wildcard address.
    pub fn is_wildcard(&self) -> bool {
        self.local.ip().is_unspecified()
    }

    /// Reads up to [`BATCH`] datagrams without blocking; returns how many
    /// (0 when none is queued). Truncated datagrams and datagrams of a
    /// wildcard socket whose destination is unknown are skipped.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.got.clear();
        let wildcard = self.is_wildcard();
        let cmsg = wildcard.then(|| nix::cmsg_space!(libc::in6_pktinfo));
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, cmsg);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = batch.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let results = match recvmmsg(
            self.socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut total = 0;
        for r in results {
            total += 1;
            let remote = r.address.as_ref().and_then(to_std);
            let local_ip = if wildcard {
                r.cmsgs().ok().and_then(|mut c| c.find_map(pktinfo_destination))
            } else {
                Some(self.local.ip())
            };
            let ok = !r.flags.contains(MsgFlags::MSG_TRUNC);
            // Each datagram stays next to its buffer: skipped ones get length 0 and are ignored by the caller.
            batch.got.push(match (remote, local_ip, ok) {
                (Some(remote), Some(ip), true) => Received {
                    local: SocketAddr::new(ip, self.local.port()),
                    remote,
                    len: r.bytes,
                },
                _ => Received {
                    local: self.local,
                    remote: self.local,
                    len: 0,
                },
            });
        }
        Ok(total)
    }

    /// Sends `items` (all with the same `local`), in as few system calls as
    /// the kernel allows; returns how many were sent. A datagram the kernel
    /// refuses is skipped; a full socket buffer drops the rest (IKE
    /// retransmits).
    pub fn send_batch(&self, items: &[Outgoing<'_>]) -> io::Result<usize> {
        let Some(first) = items.first() else { return Ok(0) };
        let src = first.local.ip();
        let with_source = self.is_wildcard() && !src.is_unspecified();
        let (mut done, mut sent) = (0, 0);
        while done < items.len() {
            let chunk = &items[done..items.len().min(done + BATCH)];
            let slices: Vec<[IoSlice<'_>; 2]> = chunk
                .iter()
                .map(|o| {
                    let marker: &[u8] = if o.marker { &MARKER } else { &[] };
                    [IoSlice::new(marker), IoSlice::new(o.data)]
                })
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                chunk.iter().map(|o| Some(SockaddrStorage::from(o.remote))).collect();
            let n = match src {
                IpAddr::V4(ip) if with_source => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                        chunk.len(),
                        Some(nix::cmsg_space!(libc::in_pktinfo)),
                    );
                    let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
                    send_chunk(self, &mut headers, &slices, &addrs, &cmsgs)
                }
                IpAddr::V6(ip) if with_source => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: ip.octets() },
                        ipi6_ifindex: 0,
                    };
                    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                        chunk.len(),
                        Some(nix::cmsg_space!(libc::in6_pktinfo)),
                    );
                    let cmsgs = [ControlMessage::Ipv6PacketInfo(&info)];
                    send_chunk(self, &mut headers, &slices, &addrs, &cmsgs)
                }
                _ => {
                    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
                    send_chunk(self, &mut headers, &slices, &addrs, &[])
                }
            };
            match n {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    sent += n;
                }
                // Socket buffer full: the rest is dropped (IKE retransmits).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // This datagram cannot go (unreachable peer, bad address): skip
                // it, the others in the batch still leave.
                Err(e) => {
                    debug!(remote = %chunk[0].remote, "send failed: {e}");
                    done += 1;
                }
            }
        }
        Ok(sent)
    }
}

fn send_chunk<'a>(
    sock: &IkeSocket,
    headers: &'a mut MultiHeaders<SockaddrStorage>,
    slices: &'a [[IoSlice<'a>; 2]],
    addrs: &[Option<SockaddrStorage>],
    cmsgs: &'a [ControlMessage<'a>],
) -> io::Result<usize> {
    let r = sendmmsg(
        sock.socket.as_raw_fd(),
        headers,
        slices,
        addrs,
        cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(r.count())
}

/// The address this host would send from towards `remote` (a route lookup
/// through a connected, unbound UDP socket; nothing is sent).
pub fn source_for(remote: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    // The route our marked IKE sockets take, not one into the TUN device.
    let _ = socket2::SockRef::from(&s).set_mark(crate::routing::OUTER_MARK);
    s.connect(remote)?;
    Ok(s.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_one(s: &IkeSocket) -> (Received, Vec<u8>) {
        let mut batch = RecvBatch::default();
        for _ in 0..200 {
            if s.recv_batch(&mut batch).unwrap() > 0 {
                let (r, d) = batch.iter().next().unwrap();
                return (r, d.to_vec());
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("nothing received");
    }

    #[test]
    fn wildcard_socket_learns_destination_and_answers_from_it() {
        let server = IkeSocket::bind("0.0.0.0:0".parse().unwrap(), false).unwrap();
        let port = server.socket.local_addr().unwrap().port();
        for dst in ["127.0.0.1", "127.0.0.2"] {
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let to: SocketAddr = format!("{dst}:{port}").parse().unwrap();
            client.send_to(b"request", to).unwrap();
            let (r, data) = recv_one(&server);
            assert_eq!(data, b"request");
            assert_eq!(r.local, to, "destination learned from IP_PKTINFO");
            assert_eq!(r.remote, client.local_addr().unwrap());
            let sent = server
                .send_batch(&[Outgoing {
                    local: r.local,
                    remote: r.remote,
                    marker: true,
                    data: b"reply",
                }])
                .unwrap();
            assert_eq!(sent, 1);
            let mut buf = [0u8; 64];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"\0\0\0\0reply", "marker prepended");
            assert_eq!(from, to, "the reply leaves from the address the request came to");
        }
    }

    #[test]
    fn ipv6_wildcard_socket_learns_destination() {
        let Ok(server) = IkeSocket::bind("[::]:0".parse().unwrap(), false) else {
            return; // no IPv6 on this host
        };
        let port = server.socket.local_addr().unwrap().port();
        let Ok(client) = std::net::UdpSocket::bind("[::1]:0") else {
            return;
        };
        let to: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        client.send_to(b"six", to).unwrap();
        let (r, _) = recv_one(&server);
        assert_eq!(r.local, to);
        server
            .send_batch(&[Outgoing {
                local: r.local,
                remote: r.remote,
                marker: false,
                data: b"back",
            }])
            .unwrap();
        let mut buf = [0u8; 16];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], to));
    }

    #[test]
    fn a_refused_datagram_does_not_stop_the_rest_of_its_batch() {
        let server = IkeSocket::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let good = client.local_addr().unwrap();
        // Port 0 is not a valid destination: the kernel refuses that one datagram.
        let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let out: Vec<Outgoing<'_>> = [(good, &b"one"[..]), (bad, b"bad"), (good, b"two")]
            .into_iter()
            .map(|(remote, data)| Outgoing {
                local: server.local,
                remote,
                marker: false,
                data,
            })
            .collect();
        assert_eq!(server.send_batch(&out).unwrap(), 2);
        let mut buf = [0u8; 8];
        for want in [&b"one"[..], b"two"] {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    #[test]
    fn batches_of_many_datagrams_are_read_and_sent() {
        let server = IkeSocket::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let to = server.socket.local_addr().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..40u8 {
            client.send_to(&[i; 10], to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::default();
        assert_eq!(server.recv_batch(&mut batch).unwrap(), BATCH);
        assert!(
            batch
                .iter()
                .enumerate()
                .all(|(i, (r, d))| d == [i as u8; 10] && r.local == to)
        );
        assert_eq!(server.recv_batch(&mut batch).unwrap(), 40 - BATCH);
        assert_eq!(server.recv_batch(&mut batch).unwrap(), 0);
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 3]).collect();
        let out: Vec<Outgoing<'_>> = payloads
            .iter()
            .map(|p| Outgoing {
                local: to,
                remote: client.local_addr().unwrap(),
                marker: false,
                data: p,
            })
            .collect();
        assert_eq!(server.send_batch(&out).unwrap(), 40);
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        for i in 0..40u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 3]);
        }
    }
}
