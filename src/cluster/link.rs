//! The inter-node link: datagrams that reached a node other than the one
//! serving their SPI travel to that node over plain UDP, each frame
//! authenticated with HMAC-SHA-256 under the cluster's link key.
//!
//! A frame: `ISL1`, sending node, kind, the datagram's original local and
//! remote addresses, a send time (seconds since the Unix epoch), the
//! datagram, and the tag over all of that. Frames older than
//! [`MAX_AGE_SECS`] are refused, which bounds replays; IKE and ESP have
//! their own replay protection beyond that.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use tracing::{debug, warn};

use super::NodeId;

const MAGIC: &[u8; 4] = b"ISL1";
const TAG_LEN: usize = 32;
/// Frames sent longer ago than this (or this far in the future) are refused.
pub const MAX_AGE_SECS: u64 = 30;
/// The largest datagram a frame carries (a full UDP payload).
const MAX_DATAGRAM: usize = 65_535;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// An IKE message (non-ESP marker removed).
    Ike,
    /// A plain ESP packet (IP protocol 50 payload) as it arrived.
    Esp,
    /// An ESP-in-UDP packet (RFC 3948; the UDP payload) as it arrived.
    EspInUdp,
}

/// A frame that did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// Too short, wrong magic, bad address family or kind.
    #[error("malformed inter-node frame")]
    Malformed,
    /// The tag does not verify under the link key.
    #[error("inter-node frame fails authentication (another link key?)")]
    Authentication,
    /// Sent too long ago, or in the future: a replay or a clock far off.
    #[error("inter-node frame sent {0} s away from now")]
    Stale(i64),
}

/// A datagram received over the link.
#[derive(Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The node that forwarded it.
    pub from: NodeId,
    /// What it is.
    pub kind: FrameKind,
    /// The address it was sent to at the first node.
    pub local: SocketAddr,
    /// Its sender.
    pub remote: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn take_addr(buf: &mut &[u8]) -> Result<SocketAddr, LinkError> {
    let (&family, rest) = buf.split_first().ok_or(LinkError::Malformed)?;
    let len = match family {
        4 => 4,
        6 => 16,
        _ => return Err(LinkError::Malformed),
    };
    if rest.len() < len + 2 {
        return Err(LinkError::Malformed);
    }
    let ip = match family {
        4 => IpAddr::from(<[u8; 4]>::try_from(&rest[..4]).map_err(|_| LinkError::Malformed)?),
        _ => IpAddr::from(<[u8; 16]>::try_from(&rest[..16]).map_err(|_| LinkError::Malformed)?),
    };
    let port = u16::from_be_bytes([rest[len], rest[len + 1]]);
    *buf = &rest[len + 2..];
    Ok(SocketAddr::new(ip, port))
}

/// Seals and opens frames with the link key.
pub struct LinkKey {
    key: hmac::Key,
}

impl LinkKey {
    /// The key from its bytes.
    pub fn new(bytes: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// A frame from node `from` carrying `data`, sent at `at` (Unix seconds).
    pub fn seal(
        &self,
        from: NodeId,
        kind: FrameKind,
        local: SocketAddr,
        remote: SocketAddr,
        at: u64,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 80);
        out.extend_from_slice(MAGIC);
        out.push(from);
        out.push(match kind {
            FrameKind::Ike => 1,
            FrameKind::Esp => 2,
            FrameKind::EspInUdp => 3,
        });
        put_addr(&mut out, local);
        put_addr(&mut out, remote);
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(data);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The datagram in `frame`, if its tag verifies and it was sent within
    /// [`MAX_AGE_SECS`] of `now` (Unix seconds).
    pub fn open(&self, frame: &[u8], now: u64) -> Result<Forwarded, LinkError> {
        if frame.len() < MAGIC.len() + 2 + TAG_LEN || &frame[..4] != MAGIC {
            return Err(LinkError::Malformed);
        }
        let (body, tag) = frame.split_at(frame.len() - TAG_LEN);
        hmac::verify(&self.key, body, tag).map_err(|_| LinkError::Authentication)?;
        let from = body[4];
        let kind = match body[5] {
            1 => FrameKind::Ike,
            2 => FrameKind::Esp,
            3 => FrameKind::EspInUdp,
            _ => return Err(LinkError::Malformed),
        };
        let mut rest = &body[6..];
        let local = take_addr(&mut rest)?;
        let remote = take_addr(&mut rest)?;
        if rest.len() < 8 {
            return Err(LinkError::Malformed);
        }
        let at = u64::from_be_bytes(<[u8; 8]>::try_from(&rest[..8]).map_err(|_| LinkError::Malformed)?);
        let age = now as i64 - at as i64;
        if age.unsigned_abs() > MAX_AGE_SECS {
            return Err(LinkError::Stale(age));
        }
        Ok(Forwarded {
            from,
            kind,
            local,
            remote,
            data: rest[8..].to_vec(),
        })
    }
}

/// Sends frames to other nodes (shared by the shards: a UDP send never
/// waits on the other node).
pub struct LinkSender {
    me: NodeId,
    key: Arc<LinkKey>,
    socket: UdpSocket,
    /// Frames that could not be sent.
    pub send_errors: AtomicU64,
    /// Frames sent.
    pub sent: AtomicU64,
}

impl LinkSender {
    /// Forwards `data` (which arrived from `remote` at `local`) to the node at `to`.
    pub fn forward(&self, to: SocketAddr, kind: FrameKind, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let frame = self.key.seal(self.me, kind, local, remote, now_secs(), data);
        match self.socket.send_to(&frame, to) {
            Ok(_) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = self.send_errors.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    warn!(to = %to, errors = n + 1, "cannot forward a datagram to another node: {e}");
                }
            }
        }
    }
}

/// The link of one node: a sender for the shards and a receiving thread.
pub struct Link {
    sender: Arc<LinkSender>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Frames refused (authentication, age, format).
    pub refused: Arc<AtomicU64>,
}

impl Link {
    /// Binds `listen` and hands every verified frame to `deliver` on the
    /// link's own thread.
    pub fn start(
        me: NodeId,
        listen: SocketAddr,
        key: &[u8],
        deliver: Box<dyn Fn(Forwarded) + Send>,
    ) -> io::Result<Self> {
        let key = Arc::new(LinkKey::new(key));
        let socket = UdpSocket::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the cluster link {listen}: {e}")))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let send_socket = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, refused, key) = (stop.clone(), refused.clone(), key.clone());
            std::thread::Builder::new().name("ironsa-link".into()).spawn(move || {
                let mut buf = vec![0u8; MAX_DATAGRAM + 128];
                while !stop.load(Ordering::Relaxed) {
                    let (n, from) = match socket.recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                        Err(e) => {
                            debug!("cluster link receive failed: {e}");
                            continue;
                        }
                    };
                    match key.open(&buf[..n], now_secs()) {
                        Ok(f) => deliver(f),
                        Err(e) => {
                            let k = refused.fetch_add(1, Ordering::Relaxed);
                            if k.is_power_of_two() {
                                warn!(from = %from, refused = k + 1, "inter-node frame refused: {e}");
                            }
                        }
                    }
                }
            })?
        };
        Ok(Self {
            sender: Arc::new(LinkSender {
                me,
                key,
                socket: send_socket,
                send_errors: AtomicU64::new(0),
                sent: AtomicU64::new(0),
            }),
            stop,
            thread: Some(thread),
            refused,
        })
    }

    /// The sender, for the shards.
    pub fn sender(&self) -> Arc<LinkSender> {
        self.sender.clone()
    }

    /// Stops the receiving thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_open_only_with_the_key_and_while_fresh() {
        let key = LinkKey::new(&[7u8; 32]);
        let (local, remote) = ("192.0.2.1:500".parse().unwrap(), "[2001:db8::2]:4500".parse().unwrap());
        let frame = key.seal(3, FrameKind::Ike, local, remote, 1_000, b"ike");
        let f = key.open(&frame, 1_010).unwrap();
        assert_eq!(
            (f.from, f.kind, f.local, f.remote, f.data.as_slice()),
            (3, FrameKind::Ike, local, remote, &b"ike"[..])
        );
        assert_eq!(key.open(&frame, 1_000 + MAX_AGE_SECS + 1), Err(LinkError::Stale(31)));
        assert_eq!(
            LinkKey::new(&[8u8; 32]).open(&frame, 1_000),
            Err(LinkError::Authentication)
        );
        let mut flipped = frame.clone();
        flipped[7] ^= 1;
        assert_eq!(key.open(&flipped, 1_000), Err(LinkError::Authentication));
        assert_eq!(key.open(&frame[..20], 1_000), Err(LinkError::Malformed));
    }

    #[test]
    fn a_link_delivers_what_another_node_forwards() {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let deliver = Box::new(move |f: Forwarded| {
            let _ = tx.lock().map(|t| t.send(f));
        });
        let a = Link::start(1, "127.0.0.1:0".parse().unwrap(), &[9u8; 32], Box::new(|_| {})).unwrap();
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = probe.local_addr().unwrap();
        drop(probe);
        let b = Link::start(2, at, &[9u8; 32], deliver).unwrap();
        let (local, remote) = ("127.0.0.1:500".parse().unwrap(), "127.0.0.1:600".parse().unwrap());
        a.sender().forward(at, FrameKind::Esp, local, remote, b"esp");
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (got.from, got.kind, got.data.as_slice()),
            (1, FrameKind::Esp, &b"esp"[..])
        );
        // A node with another key is refused.
        let c = Link::start(3, "127.0.0.1:0".parse().unwrap(), &[1u8; 32], Box::new(|_| {})).unwrap();
        c.sender().forward(at, FrameKind::Ike, local, remote, b"x");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while b.refused.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a frame under another key is refused"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rx.try_recv().is_err());
    }
}
