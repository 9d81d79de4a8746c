//! The software data plane: the fastpath crate's SAD, SPD and workers over a
//! TUN device (cleartext side), UDP port 4500 (ESP-in-UDP, RFC 3948) and a
//! raw IP protocol 50 socket (plain ESP).
//!
//! Threads: one receives ESP-in-UDP in batches on each NAT-T socket (IKE found
//! there behind a non-ESP marker is handed to the control plane), one
//! receives raw ESP; both decrypt in batches and write to the TUN device,
//! merging TCP segments into super-packets (GRO). `[fastpath] workers`
//! transmit threads each read one queue of the multi-queue TUN device, which
//! hands over 64 KiB TCP/UDP super-packets (TSO/USO offloads): they cut them
//! into MTU-sized packets (GSO), encrypt in batches and send with `sendmmsg`. The control-plane
//! shards send IKE on the NAT-T port through clones of the same sockets, so
//! no second socket joins the port's receive group.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::config::IpsecMode;
use control::crypto::{EncrAlg, IntegAlg as IkeInteg};
use control::ike_sa::{ChildSaInstall, Event, SpiAllocator};
use dashmap::DashSet;
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::esp::Mode;
use fastpath::esp::aead::{CipherKeys, EncAlg, IntegAlg};
use fastpath::io::mmsg::{self, MmsgScratch};
use fastpath::io::raw::RawEspIo;
use fastpath::io::tun::{Tun, TunOptions};
use fastpath::io::udp::UdpIo;
use fastpath::sad::{Direction, SaId, SaParams, Sad, UdpEncap};
use fastpath::spd::{Policy, PolicyAction, PolicyId, Spd, TrafficSelector};
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker, WorkerCounters};
use tracing::{debug, info, warn};

use crate::dataplane::{ChildCounters, DataPlane};

const BATCH: usize = 64;
/// Packets per transmit batch: room for a 64 KiB super-packet cut at a small MSS.
const TX_BATCH: usize = 256;
/// Largest read from the TUN device: virtio-net header + 64 KiB packet.
const TUN_READ_MAX: usize = fastpath::io::gso::VNET_HDR_LEN + 65536;
/// 64 KiB messages received per `recvmmsg` on a NAT-T socket with UDP GRO.
const GRO_MESSAGES: usize = 4;
/// Socket buffer size for the ESP sockets.
const SOCKET_BUFFER: usize = 8 << 20;

/// The sockets a transmit thread sends ESP with.
struct Transmit {
    udp: Vec<(SocketAddr, UdpIo)>,
    raw: Option<RawEspIo>,
    /// `IPPROTO_RAW` socket for IPv4 ESP with our own header (send-only, no
    /// `ip_append_data` work in the kernel), with its `sendmmsg` scratch.
    hdrincl: Option<(socket2::Socket, MmsgScratch)>,
    items: Vec<(usize, SocketAddr)>,
    retry: Vec<(usize, SocketAddr)>,
}

impl Transmit {
    /// Sends every [`Verdict::ToPeer`] packet of the batch in `sendmmsg` calls.
    fn send(&mut self, bufs: &mut [PacketBuf], verdicts: &[Verdict]) {
        // Raw ESP: everything without UDP encapsulation.
        self.items.clear();
        self.retry.clear();
        for (i, v) in verdicts.iter().enumerate() {
            if let Verdict::ToPeer { src, dst, udp: None } = v {
                let with_header = self.hdrincl.is_some()
                    && src.is_ipv4()
                    && fastpath::ip::prepend_ip_header(&mut bufs[i], *src, *dst, fastpath::esp::IPPROTO_ESP).is_ok();
                let to = SocketAddr::new(*dst, 0);
                if with_header {
                    self.items.push((i, to))
                } else {
                    self.retry.push((i, to))
                }
            }
        }
        if let Some((sock, scratch)) = self.hdrincl.as_mut() {
            let items = &self.items;
            let bufs_ro: &[PacketBuf] = bufs;
            let mut failed = Vec::new();
            Self::send_all(
                items.len(),
                |from| {
                    mmsg::send_batch(
                        sock.as_raw_fd(),
                        items[from..].iter().map(|(i, a)| (bufs_ro[*i].data(), *a)),
                        scratch,
                    )
                },
                |k| failed.push(items[k]),
            );
            // Too large for the link (EMSGSIZE) and the like: let the kernel
            // build the header (and fragment) instead.
            for (i, a) in failed {
                if bufs[i].trim_front(20).is_ok() {
                    self.retry.push((i, a));
                }
            }
        }
        if let Some(r) = self.raw.as_mut() {
            let items = &self.retry;
            let bufs_ro: &[PacketBuf] = bufs;
            Self::send_all(
                items.len(),
                |from| r.send_burst(items[from..].iter().map(|(i, a)| (bufs_ro[*i].data(), a.ip()))),
                |_| {},
            );
        }
        // ESP-in-UDP, per local socket.
        for k in 0..self.udp.len() {
            let local = self.udp[k].0;
            self.items.clear();
            for (i, v) in verdicts.iter().enumerate() {
                if let Verdict::ToPeer { src, dst, udp: Some(u) } = v {
                    let mine = SocketAddr::new(*src, u.local_port) == local
                        || (k == 0 && !self.udp.iter().any(|(a, _)| *a == SocketAddr::new(*src, u.local_port)));
                    if mine {
                        self.items.push((i, SocketAddr::new(*dst, u.remote_port)));
                    }
                }
            }
            let items = &self.items;
            let io = &mut self.udp[k].1;
            let bufs_ro: &[PacketBuf] = bufs;
            Self::send_all(
                items.len(),
                |from| io.send_burst(items[from..].iter().map(|(i, a)| (bufs_ro[*i].data(), *a))),
                |_| {},
            );
        }
    }

    /// Calls `send(from)` until `total` items went out; a failing item is
    /// skipped and reported to `failed` with its position.
    fn send_all(total: usize, mut send: impl FnMut(usize) -> io::Result<usize>, mut failed: impl FnMut(usize)) {
        let mut sent = 0;
        while sent < total {
            match send(sent) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) => {
                    debug!("ESP send: {e}");
                    failed(sent);
                    sent += 1;
                }
            }
        }
    }
}

/// Where IKE messages found on the NAT-T port go (local, remote, message without marker).
pub type IkeSink = Arc<dyn Fn(SocketAddr, SocketAddr, Vec<u8>) + Send + Sync>;

/// What the data plane asks of the control plane when a CHILD_SA reaches a
/// byte/packet lifetime or runs out of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeRequest {
    /// Soft lifetime or sequence space exhausted: rekey the child.
    Rekey,
    /// Hard lifetime: the SA no longer passes traffic; delete the child.
    Delete,
}

/// Receives lifetime requests: (IKE SPIs, child inbound SPI, request).
pub type LifetimeSink = Arc<dyn Fn((u64, u64), u32, LifetimeRequest) + Send + Sync>;

/// Fastpath SA id → (IKE SPIs, child inbound SPI), to route lifetime events.
type Owners = dashmap::DashMap<u64, ((u64, u64), u32)>;

/// Byte and packet lifetimes of a child template (0 = none), keyed by (connection, child).
pub type ByteLifetimes = HashMap<(String, String), (u64, u64)>;

/// Inbound SPIs unique on this gateway.
#[derive(Default)]
pub struct UniqueSpis {
    used: DashSet<u32>,
}

impl SpiAllocator for UniqueSpis {
    fn allocate(&self) -> u32 {
        loop {
            let v = control::crypto::random::u32().unwrap_or(0);
            if v > 255 && self.used.insert(v) {
                return v;
            }
        }
    }
    fn release(&self, spi: u32) {
        self.used.remove(&spi);
    }
}

struct Installed {
    spi_out: u32,
    inbound: SaId,
    outbound: SaId,
    policies: Vec<PolicyId>,
}

/// Settings of the software data plane.
pub struct SoftwareConfig {
    /// TUN device name.
    pub tun_name: String,
    /// Our addresses (NAT-T sockets and raw ESP are bound per address).
    pub listen: Vec<IpAddr>,
    /// NAT-T port.
    pub nat_port: u16,
    /// Add kernel routes for remote selectors through the TUN device.
    pub install_routes: bool,
    /// Wireshark key log file (esp_sa UAT lines), off when None.
    pub keylog: Option<std::path::PathBuf>,
    /// Transmit threads, each reading its own queue of the TUN device.
    pub workers: usize,
    /// Soft byte/packet lifetimes per child template; hard = soft + 10%.
    pub byte_lifetimes: ByteLifetimes,
}

/// The software data plane.
pub struct SoftwareDataPlane {
    sad: Arc<Sad>,
    spd: Arc<Spd>,
    spis: Arc<UniqueSpis>,
    children: Mutex<HashMap<u32, Installed>>,
    tun_name: String,
    tun: Mutex<Vec<Tun>>,
    nat: Mutex<Vec<UdpIo>>,
    nat_senders: Vec<(SocketAddr, UdpSocket)>,
    raw: Mutex<Vec<RawEspIo>>,
    in_counters: Mutex<Vec<Arc<WorkerCounters>>>,
    out_counters: Mutex<Vec<Arc<WorkerCounters>>>,
    install_routes: bool,
    keylog: Option<Mutex<std::fs::File>>,
    stop: Arc<AtomicBool>,
    byte_lifetimes: ByteLifetimes,
    owners: Arc<Owners>,
    lifetime_sink: Arc<std::sync::OnceLock<LifetimeSink>>,
}

fn enc_alg(e: EncrAlg) -> Option<EncAlg> {
    Some(match e {
        EncrAlg::AesGcm16 { key_bits: 128 } => EncAlg::AesGcm16_128,
        EncrAlg::AesGcm16 { key_bits: 256 } => EncAlg::AesGcm16_256,
        EncrAlg::ChaCha20Poly1305 => EncAlg::ChaCha20Poly1305,
        EncrAlg::AesCbc { key_bits: 128 } => EncAlg::AesCbc128,
        EncrAlg::AesCbc { key_bits: 256 } => EncAlg::AesCbc256,
        _ => return None,
    })
}

fn integ_alg(i: Option<IkeInteg>) -> IntegAlg {
    match i {
        None => IntegAlg::None,
        Some(IkeInteg::HmacSha256_128) => IntegAlg::HmacSha256_128,
        Some(IkeInteg::HmacSha384_192) => IntegAlg::HmacSha384_192,
        Some(IkeInteg::HmacSha512_256) => IntegAlg::HmacSha512_256,
    }
}

fn selector(ts: &control::wire::ikev2::TrafficSelector) -> Option<TrafficSelector> {
    TrafficSelector::new(ts.start_addr, ts.end_addr, ts.ip_protocol, ts.start_port, ts.end_port).ok()
}

/// Wireshark's name of an ESP algorithm in the esp_sa table.
fn wireshark_names(c: &ChildSaInstall) -> (&'static str, &'static str) {
    let enc = match c.encr {
        EncrAlg::AesGcm16 { .. } => "AES-GCM with 16 octet ICV [RFC4106]",
        EncrAlg::AesCbc { .. } => "AES-CBC [RFC3602]",
        EncrAlg::ChaCha20Poly1305 => "ChaCha20 with Poly1305 [RFC7634]",
    };
    let integ = match c.integ {
        None => "NULL",
        Some(IkeInteg::HmacSha256_128) => "HMAC-SHA-256-128 [RFC4868]",
        Some(IkeInteg::HmacSha384_192) => "HMAC-SHA-384-192 [RFC4868]",
        Some(IkeInteg::HmacSha512_256) => "HMAC-SHA-512-256 [RFC4868]",
    };
    (enc, integ)
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

impl SoftwareDataPlane {
    /// Opens the TUN device and binds the sockets (threads start with [`SoftwareDataPlane::run`]).
    pub fn open(cfg: &SoftwareConfig) -> io::Result<Self> {
        let queues = Self::open_queues(&cfg.tun_name, cfg.workers.max(1))
            .map_err(|e| io::Error::new(e.kind(), format!("TUN {}: {e}", cfg.tun_name)))?;
        let name = queues.first().map(|q| q.name().to_string()).unwrap_or_default();
        let up = std::process::Command::new("ip")
            .args(["link", "set", &name, "up", "mtu", "1400"])
            .status()?;
        if !up.success() {
            warn!(tun = %name, "could not bring the TUN device up");
        }
        let mut nat = Vec::new();
        let mut nat_senders = Vec::new();
        let mut raw = Vec::new();
        for ip in &cfg.listen {
            let addr = SocketAddr::new(*ip, cfg.nat_port);
            let mut io = UdpIo::bind(addr, BATCH).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
            // Trains of ESP-in-UDP datagrams from one peer arrive as one buffer.
            if let Err(e) = io.enable_gro(GRO_MESSAGES) {
                warn!("no UDP GRO on {addr}: {e}");
            }
            io.socket().set_read_timeout(Some(Duration::from_millis(100)))?;
            if let Err(e) = mmsg::set_buffer_sizes(io.socket().as_raw_fd(), SOCKET_BUFFER) {
                warn!("NAT-T socket buffers: {e}");
            }
            nat_senders.push((addr, io.socket().try_clone()?));
            nat.push(io);
            match RawEspIo::open(*ip, BATCH) {
                Ok(r) => {
                    r.socket().set_read_timeout(Some(Duration::from_millis(100)))?;
                    if let Err(e) = mmsg::set_buffer_sizes(r.socket().as_raw_fd(), SOCKET_BUFFER) {
                        warn!("raw ESP socket buffers: {e}");
                    }
                    raw.push(r);
                }
                Err(e) => warn!(address = %ip, "no raw ESP socket (plain ESP disabled): {e}"),
            }
        }
        let keylog = match &cfg.keylog {
            None => None,
            Some(p) => {
                warn!(file = %p.display(), "WRITING ESP KEYS TO A FILE: anyone who can read it can decrypt the tunnels; for debugging only");
                Some(Mutex::new(
                    std::fs::OpenOptions::new().create(true).append(true).open(p)?,
                ))
            }
        };
        let (sad, events) = Sad::new(1);
        let owners: Arc<Owners> = Arc::new(dashmap::DashMap::new());
        let lifetime_sink: Arc<std::sync::OnceLock<LifetimeSink>> = Arc::new(std::sync::OnceLock::new());
        {
            let owners = owners.clone();
            let sink = lifetime_sink.clone();
            std::thread::Builder::new().name("ironsa-sa-events".into()).spawn(move || {
                for e in events {
                    let (id, req) = match e {
                        fastpath::sad::SaEvent::SoftExpired { sa } | fastpath::sad::SaEvent::SeqExhausted { sa } => {
                            (sa, LifetimeRequest::Rekey)
                        }
                        fastpath::sad::SaEvent::HardExpired { sa } => (sa, LifetimeRequest::Delete),
                    };
                    let Some(owner) = owners.get(&id.0).map(|o| *o) else { continue };
                    info!(event = ?e, spi_in = format_args!("{:08x}", owner.1), "fastpath lifetime reached: {req:?}");
                    if let Some(s) = sink.get() {
                        s(owner.0, owner.1, req);
                    }
                }
            })?;
        }
        info!(tun = %name, queues = queues.len(), offloads = format_args!("{:#x}", queues.first().map(|q| q.offloads()).unwrap_or(0)), "software fastpath ready");
        Ok(Self {
            sad: Arc::new(sad),
            spd: Arc::new(Spd::new()),
            spis: Arc::new(UniqueSpis::default()),
            children: Mutex::new(HashMap::new()),
            tun_name: name,
            tun: Mutex::new(queues),
            nat: Mutex::new(nat),
            nat_senders,
            raw: Mutex::new(raw),
            in_counters: Mutex::new(Vec::new()),
            out_counters: Mutex::new(Vec::new()),
            install_routes: cfg.install_routes,
            keylog,
            stop: Arc::new(AtomicBool::new(false)),
            byte_lifetimes: cfg.byte_lifetimes.clone(),
            owners,
            lifetime_sink,
        })
    }

    /// A send-only IPv4 raw socket for packets that carry their own IP header.
    fn open_hdrincl() -> io::Result<socket2::Socket> {
        const IPPROTO_RAW: i32 = 255;
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(IPPROTO_RAW)),
        )?;
        if let Err(e) = mmsg::set_buffer_sizes(s.as_raw_fd(), SOCKET_BUFFER) {
            debug!("IPPROTO_RAW socket buffers: {e}");
        }
        Ok(s)
    }

    /// Opens `n` queues of TUN device `name` with virtio-net headers and
    /// segmentation offloads; falls back to one plain queue when the kernel
    /// refuses.
    fn open_queues(name: &str, n: usize) -> io::Result<Vec<Tun>> {
        let opts = TunOptions {
            multi_queue: true,
            offload: true,
        };
        match Tun::open_with(name, opts) {
            Ok(first) => {
                let dev = first.name().to_string();
                let mut queues = vec![first];
                for _ in 1..n {
                    match Tun::open_with(&dev, opts) {
                        Ok(q) => queues.push(q),
                        Err(e) => {
                            warn!(queues = queues.len(), "no further TUN queue: {e}");
                            break;
                        }
                    }
                }
                Ok(queues)
            }
            Err(e) => {
                warn!("multi-queue TUN with offloads unavailable ({e}); one plain queue");
                Ok(vec![Tun::open(name, false)?])
            }
        }
    }

    /// Clones of the NAT-T sockets for the control plane to send IKE from.
    pub fn nat_sockets(&self) -> io::Result<Vec<(SocketAddr, UdpSocket)>> {
        self.nat_senders.iter().map(|(a, s)| Ok((*a, s.try_clone()?))).collect()
    }

    /// Starts the worker threads; IKE from the NAT-T port goes to `sink`.
    pub fn run(self: &Arc<Self>, sink: IkeSink, lifetimes: LifetimeSink) -> io::Result<()> {
        let _ = self.lifetime_sink.set(lifetimes);
        let queues = std::mem::take(&mut *self.tun.lock().map_err(|_| io::Error::other("lock"))?);
        let Some(first) = queues.first() else {
            return Err(io::Error::other("already running"));
        };
        let writer = first.try_clone()?;
        let raws: Vec<RawEspIo> = self
            .raw
            .lock()
            .map_err(|_| io::Error::other("lock"))?
            .drain(..)
            .collect();
        let raw_sender = match raws.first() {
            Some(r) => Some(r.try_clone(TX_BATCH)?),
            None => None,
        };
        for (i, io) in self
            .nat
            .lock()
            .map_err(|_| io::Error::other("lock"))?
            .drain(..)
            .enumerate()
        {
            let me = self.clone();
            let sink = sink.clone();
            let out = writer.try_clone()?;
            std::thread::Builder::new()
                .name(format!("ironsa-esp-udp-{i}"))
                .spawn(move || me.udp_rx_loop(io, out, sink))?;
        }
        for (i, io) in raws.into_iter().enumerate() {
            let me = self.clone();
            let out = writer.try_clone()?;
            std::thread::Builder::new()
                .name(format!("ironsa-esp-raw-{i}"))
                .spawn(move || me.raw_rx_loop(io, out))?;
        }
        for (i, tun) in queues.into_iter().enumerate() {
            let me = self.clone();
            let raw = match &raw_sender {
                Some(r) => Some(r.try_clone(TX_BATCH)?),
                None => None,
            };
            std::thread::Builder::new()
                .name(format!("ironsa-esp-tx-{i}"))
                .spawn(move || me.tx_loop(i, tun, raw))?;
        }
        Ok(())
    }

    fn new_worker(&self, id: usize, inbound: bool) -> Worker {
        // Several transmit threads may carry one SA: sequence numbers are
        // reserved atomically, so no pinning is needed.
        let w = Worker::new(id, self.sad.clone(), self.spd.clone()).without_pinning();
        let list = if inbound { &self.in_counters } else { &self.out_counters };
        if let Ok(mut c) = list.lock() {
            c.push(w.counters());
        }
        w
    }

    /// Writes the packets of a decrypted burst whose verdict is [`Verdict::ToTunnel`].
    fn to_tunnel(tun: &mut Tun, bufs: &[PacketBuf], verdicts: &[Verdict]) {
        let pkts: Vec<&[u8]> = bufs
            .iter()
            .zip(verdicts)
            .filter(|(_, v)| **v == Verdict::ToTunnel)
            .map(|(b, _)| b.data())
            .collect();
        if pkts.is_empty() {
            return;
        }
        let failed = tun.send_batch(&pkts);
        if failed > 0 {
            debug!(failed, "TUN writes failed");
        }
    }

    fn udp_rx_loop(self: Arc<Self>, mut io: UdpIo, mut tun: Tun, sink: IkeSink) {
        let mut worker = self.new_worker(0, true);
        let local = io.local_addr();
        let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::with_defaults()).collect();
        let mut meta = vec![
            PacketMeta {
                src: local.ip(),
                dst: Some(local.ip()),
                src_port: 0
            };
            BATCH
        ];
        let mut verdicts = vec![Verdict::Keepalive; BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            let n = match io.recv_burst(&mut bufs, &mut meta, true) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    warn!("NAT-T receive failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            worker.inbound_burst(InboundKind::Udp, &mut bufs[..n], &meta[..n], &mut verdicts[..n]);
            Self::to_tunnel(&mut tun, &bufs[..n], &verdicts[..n]);
            for i in 0..n {
                if verdicts[i] == Verdict::Ike {
                    sink(
                        local,
                        SocketAddr::new(meta[i].src, meta[i].src_port),
                        bufs[i].data().to_vec(),
                    );
                }
            }
        }
    }

    fn raw_rx_loop(self: Arc<Self>, mut io: RawEspIo, mut tun: Tun) {
        let mut worker = self.new_worker(0, true);
        let any = IpAddr::from([0u8, 0, 0, 0]);
        let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::with_defaults()).collect();
        let mut meta = vec![
            PacketMeta {
                src: any,
                dst: None,
                src_port: 0
            };
            BATCH
        ];
        let mut verdicts = vec![Verdict::Keepalive; BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            let n = match io.recv_burst(&mut bufs, &mut meta, true) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    warn!("raw ESP receive failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            worker.inbound_burst(InboundKind::RawEsp, &mut bufs[..n], &meta[..n], &mut verdicts[..n]);
            Self::to_tunnel(&mut tun, &bufs[..n], &verdicts[..n]);
        }
    }

    /// Reads the TUN queue, cuts super-packets into MTU-sized packets (GSO),
    /// encrypts them in batches and sends them with `sendmmsg`.
    fn tx_loop(self: Arc<Self>, id: usize, mut tun: Tun, raw: Option<RawEspIo>) {
        let mut worker = self.new_worker(id, false);
        let hdrincl = raw.as_ref().and_then(|_| match Self::open_hdrincl() {
            Ok(s) => Some((s, MmsgScratch::new(TX_BATCH))),
            Err(e) => {
                debug!("no IPPROTO_RAW socket (the kernel builds outer headers): {e}");
                None
            }
        });
        let mut out = Transmit {
            udp: Vec::new(),
            raw,
            hdrincl,
            retry: Vec::with_capacity(TX_BATCH),
            items: Vec::with_capacity(TX_BATCH),
        };
        for (a, s) in &self.nat_senders {
            match s
                .try_clone()
                .and_then(|s| UdpIo::from_socket(s, TX_BATCH))
                .map(|mut io| {
                    // The segments of a TUN super-packet leave in one UDP GSO send.
                    io.enable_gso();
                    io
                }) {
                Ok(io) => out.udp.push((*a, io)),
                Err(e) => warn!("NAT-T sender: {e}"),
            }
        }
        let mut bufs: Vec<PacketBuf> = (0..TX_BATCH).map(|_| PacketBuf::with_defaults()).collect();
        let mut verdicts = vec![Verdict::Keepalive; TX_BATCH];
        let mut scratch = vec![0u8; TUN_READ_MAX];
        if let Err(e) = tun.set_nonblocking(true) {
            warn!("TUN non-blocking: {e}");
            return;
        }
        let Ok(mut poll) = mio::Poll::new() else { return };
        let fd = tun.file().as_raw_fd();
        if poll
            .registry()
            .register(&mut mio::unix::SourceFd(&fd), mio::Token(0), mio::Interest::READABLE)
            .is_err()
        {
            return;
        }
        let mut events = mio::Events::with_capacity(4);
        // A packet read but not yet cut (it did not fit the current batch).
        let mut pending: Option<usize> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
            loop {
                let mut filled = 0;
                let mut drained = false;
                while filled < TX_BATCH {
                    let len = match pending.take() {
                        Some(len) => len,
                        None => match tun.recv_raw(&mut scratch) {
                            Ok(len) => len,
                            Err(e) => {
                                if e.kind() != io::ErrorKind::WouldBlock {
                                    debug!("TUN read: {e}");
                                }
                                drained = true;
                                break;
                            }
                        },
                    };
                    let raw = &scratch[..len];
                    match tun.segments_needed(raw) {
                        Ok(need) if need > TX_BATCH => debug!(need, "super-packet with too many segments dropped"),
                        Ok(need) if need > TX_BATCH - filled => {
                            pending = Some(len);
                            break;
                        }
                        Ok(_) => match tun.recv_segments(raw, &mut bufs[filled..]) {
                            Ok(k) => filled += k,
                            Err(e) => debug!("TUN packet not segmented: {e}"),
                        },
                        Err(e) => debug!("TUN packet not segmented: {e}"),
                    }
                }
                if filled > 0 {
                    worker.outbound_burst(&mut bufs[..filled], &mut verdicts[..filled]);
                    out.send(&mut bufs[..filled], &verdicts[..filled]);
                }
                if drained {
                    break;
                }
            }
        }
    }

    fn route(&self, ts: &control::wire::ikev2::TrafficSelector, add: bool) {
        let prefix = control::ts::display(ts);
        if prefix.contains("..") || prefix.contains('[') {
            return; // only plain prefixes can be routes
        }
        let verb = if add { "replace" } else { "del" };
        let ok = std::process::Command::new("ip")
            .args(["route", verb, &prefix, "dev", &self.tun_name])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if add && !ok {
            warn!(prefix = %prefix, "could not install route");
        }
    }

    fn params(&self, c: &ChildSaInstall, direction: Direction) -> Option<SaParams> {
        let (spi, keys) = match direction {
            Direction::Inbound => (c.spi_in, &c.inbound),
            Direction::Outbound => (c.spi_out, &c.outbound),
        };
        let keys = CipherKeys {
            enc: enc_alg(c.encr)?,
            integ: integ_alg(c.integ),
            enc_key: keys.encr.clone(),
            integ_key: keys.integ.clone(),
        };
        let mut p = SaParams::new(spi, direction, keys, c.local.ip(), c.remote.ip());
        p.mode = match c.mode {
            IpsecMode::Tunnel => Mode::Tunnel,
            IpsecMode::Transport => Mode::Transport,
        };
        if c.udp_encap {
            p.udp_encap = Some(UdpEncap {
                local_port: c.local.port(),
                remote_port: c.remote.port(),
            });
        }
        p.esn = c.esn;
        if let Some(&(bytes, packets)) = self.byte_lifetimes.get(&(c.connection.clone(), c.name.clone())) {
            p.lifetime = fastpath::sad::Lifetime {
                soft_bytes: bytes,
                hard_bytes: bytes.saturating_add(bytes / 10),
                soft_packets: packets,
                hard_packets: packets.saturating_add(packets / 10),
            };
        }
        p.local_ts = c.local_ts.iter().filter_map(selector).collect();
        p.remote_ts = c.remote_ts.iter().filter_map(selector).collect();
        Some(p)
    }

    fn write_keylog(&self, c: &ChildSaInstall) {
        let Some(f) = &self.keylog else { return };
        let (enc, integ) = wireshark_names(c);
        let fam = if c.local.is_ipv4() { "IPv4" } else { "IPv6" };
        let line = |src: IpAddr, dst: IpAddr, spi: u32, k: &control::ike_sa::DirectionKeys| {
            let ik = if k.integ.is_empty() {
                String::new()
            } else {
                format!("0x{}", hex(&k.integ))
            };
            format!(
                "\"{fam}\",\"{src}\",\"{dst}\",\"0x{spi:08x}\",\"{enc}\",\"0x{}\",\"{integ}\",\"{ik}\"\n",
                hex(&k.encr)
            )
        };
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(line(c.remote.ip(), c.local.ip(), c.spi_in, &c.inbound).as_bytes());
            let _ = f.write_all(line(c.local.ip(), c.remote.ip(), c.spi_out, &c.outbound).as_bytes());
            let _ = f.flush();
        }
    }
}

impl DataPlane for SoftwareDataPlane {
    fn install(&self, c: &ChildSaInstall) {
        let (Some(inp), Some(outp)) = (self.params(c, Direction::Inbound), self.params(c, Direction::Outbound)) else {
            warn!(child = %c.name, encr = %c.encr.name(), "the software fastpath does not support this cipher");
            return;
        };
        let inbound = match self.sad.install_inbound(&inp) {
            Ok(id) => id,
            Err(e) => {
                warn!(spi = format_args!("{:08x}", c.spi_in), "inbound SA not installed: {e}");
                return;
            }
        };
        let outbound = match self.sad.install_outbound(&outp) {
            Ok(id) => id,
            Err(e) => {
                warn!(
                    spi = format_args!("{:08x}", c.spi_out),
                    "outbound SA not installed: {e}"
                );
                let _ = self.sad.remove(inbound);
                return;
            }
        };
        let mut children = match self.children.lock() {
            Ok(c) => c,
            Err(_) => return,
        };
        let mut policies = Vec::new();
        let replaced = c.rekey_of.and_then(|old| children.get_mut(&old)).map(|old| {
            // Rekey: the policies switch to the new outbound SA at once; the old
            // inbound SA keeps decrypting until the old child is deleted.
            self.spd.replace_sa(old.outbound, outbound);
            std::mem::take(&mut old.policies)
        });
        match replaced {
            Some(p) => policies = p,
            None => {
                for l in c.local_ts.iter().filter_map(selector) {
                    for r in c.remote_ts.iter().filter_map(selector) {
                        match self.spd.insert(&Policy {
                            local: l,
                            remote: r,
                            action: PolicyAction::Protect(outbound),
                            priority: 100,
                        }) {
                            Ok(id) => policies.push(id),
                            Err(e) => warn!("policy not installed: {e}"),
                        }
                    }
                }
                if self.install_routes {
                    for r in &c.remote_ts {
                        self.route(r, true);
                    }
                }
            }
        }
        children.insert(
            c.spi_in,
            Installed {
                spi_out: c.spi_out,
                inbound,
                outbound,
                policies,
            },
        );
        self.owners.insert(inbound.0, (c.ike_spis, c.spi_in));
        self.owners.insert(outbound.0, (c.ike_spis, c.spi_in));
        drop(children);
        self.write_keylog(c);
        debug!(
            spi_in = format_args!("{:08x}", c.spi_in),
            spi_out = format_args!("{:08x}", c.spi_out),
            "CHILD_SA in the fastpath"
        );
    }

    fn remove(&self, spi_in: u32, _spi_out: u32) {
        let Some(old) = self.children.lock().ok().and_then(|mut c| c.remove(&spi_in)) else {
            return;
        };
        for p in old.policies {
            let _ = self.spd.remove(p);
        }
        let _ = self.sad.remove(old.inbound);
        let _ = self.sad.remove(old.outbound);
        self.owners.remove(&old.inbound.0);
        self.owners.remove(&old.outbound.0);
        let _ = old.spi_out;
    }

    fn esp_received(&self, _local: SocketAddr, _remote: SocketAddr, _packet: &[u8]) {
        // The fastpath owns the NAT-T sockets; the control plane never reads ESP.
    }

    fn ike_event(&self, _event: &Event) {}

    fn child_counters(&self, spi_in: u32) -> Option<ChildCounters> {
        let children = self.children.lock().ok()?;
        let c = children.get(&spi_in)?;
        let i = self.sad.inbound_by_id(c.inbound)?.counters.snapshot();
        let o = self.sad.outbound(c.outbound)?.counters.snapshot();
        Some(ChildCounters {
            packets_in: i.packets,
            bytes_in: i.bytes,
            packets_out: o.packets,
            bytes_out: o.bytes,
            drops: i.drops.iter().sum::<u64>() + o.drops.iter().sum::<u64>(),
        })
    }

    fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        self.spis.clone()
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        let (ins, outs) = self.sad.len();
        let _ = writeln!(
            out,
            "# HELP ironsa_esp_sas ESP SAs in the fastpath\n# TYPE ironsa_esp_sas gauge"
        );
        let _ = writeln!(
            out,
            "ironsa_esp_sas{{direction=\"in\"}} {ins}\nironsa_esp_sas{{direction=\"out\"}} {outs}"
        );
        let mut inbound = Vec::new();
        if let Ok(c) = self.in_counters.lock() {
            inbound = c.iter().map(|c| c.inbound.snapshot()).collect();
        }
        let outbound: Vec<_> = self
            .out_counters
            .lock()
            .map(|c| c.iter().map(|c| c.outbound.snapshot()).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP ironsa_esp_packets_total ESP packets processed\n# TYPE ironsa_esp_packets_total counter"
        );
        let _ = writeln!(
            out,
            "# HELP ironsa_esp_bytes_total inner bytes processed\n# TYPE ironsa_esp_bytes_total counter"
        );
        let _ = writeln!(
            out,
            "# HELP ironsa_esp_drops_total ESP packets dropped, by reason\n# TYPE ironsa_esp_drops_total counter"
        );
        let in_pk: u64 = inbound.iter().map(|s| s.packets).sum();
        let in_by: u64 = inbound.iter().map(|s| s.bytes).sum();
        let _ = writeln!(
            out,
            "ironsa_esp_packets_total{{direction=\"in\"}} {in_pk}\nironsa_esp_bytes_total{{direction=\"in\"}} {in_by}"
        );
        let out_pk: u64 = outbound.iter().map(|s| s.packets).sum();
        let out_by: u64 = outbound.iter().map(|s| s.bytes).sum();
        let _ = writeln!(
            out,
            "ironsa_esp_packets_total{{direction=\"out\"}} {out_pk}\nironsa_esp_bytes_total{{direction=\"out\"}} {out_by}"
        );
        for r in DropReason::ALL {
            let i: u64 = inbound.iter().map(|s| s.dropped(r)).sum();
            let o: u64 = outbound.iter().map(|s| s.dropped(r)).sum();
            let _ = writeln!(
                out,
                "ironsa_esp_drops_total{{direction=\"in\",reason=\"{}\"}} {i}",
                r.name()
            );
            let _ = writeln!(
                out,
                "ironsa_esp_drops_total{{direction=\"out\",reason=\"{}\"}} {o}",
                r.name()
            );
        }
        out
    }
}

impl Drop for SoftwareDataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
