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

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::ike_sa::{ChildSaInstall, Event, SpiAllocator};
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::io::mmsg::{self, MmsgScratch, QueueDrops};
use fastpath::io::raw::RawEspIo;
use fastpath::io::tun::{Tun, TunOptions};
use fastpath::io::udp::UdpIo;
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker, WorkerCounters};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::child_sas::{ChildSas, ChildSettings, IkeSink, LifetimeSink};
use crate::dataplane::{ChildCounters, DataPlane, EspForward};
use crate::routing::{LinkDrops, OUTER_MARK, Route, Rtnl, TunRoutes};

const BATCH: usize = 64;
/// Packets per transmit batch: room for a 64 KiB super-packet cut at a small MSS.
const TX_BATCH: usize = 256;
/// Largest read from the TUN device: virtio-net header + 64 KiB packet.
const TUN_READ_MAX: usize = fastpath::io::gso::VNET_HDR_LEN + 65536;
/// 64 KiB messages received per `recvmmsg` on a NAT-T socket with UDP GRO.
const GRO_MESSAGES: usize = 4;
/// MTU of the TUN device.
const TUN_MTU: u32 = 1400;
/// Bytes per packet when the socket buffer size is turned into a TUN queue length.
const TUN_QUEUE_BYTES_PER_PACKET: usize = 2048;
/// Shortest TUN queue, in packets (the kernel's default for TUN devices).
const TUN_MIN_QUEUE: u32 = 500;

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
    /// Byte/packet lifetimes and replay windows per child template.
    pub child_settings: ChildSettings,
    /// Receive and send buffer of each ESP socket, in bytes; the TUN
    /// device's queue holds as many bytes of MTU-sized packets.
    pub socket_buffer: usize,
    /// Routes into the TUN device for as long as ironsa runs: the
    /// virtual-IP pools, so that their clients need no route each.
    pub standing_routes: Vec<Route>,
}

/// A receive queue of the data plane whose overflows are counted.
struct QueueCounter {
    /// `nat_t` or `raw_esp`.
    queue: &'static str,
    /// The socket's local address.
    local: String,
    drops: QueueDrops,
}

/// The software data plane.
pub struct SoftwareDataPlane {
    children: ChildSas,
    tun_name: String,
    tun: Mutex<Vec<Tun>>,
    nat: Mutex<Vec<UdpIo>>,
    nat_senders: Vec<(SocketAddr, UdpSocket)>,
    raw: Mutex<Vec<RawEspIo>>,
    in_counters: Mutex<Vec<Arc<WorkerCounters>>>,
    out_counters: Mutex<Vec<Arc<WorkerCounters>>>,
    /// Routes into the TUN device (with `install_routes`).
    routes: Option<Arc<TunRoutes>>,
    /// Overflows of the sockets' receive queues.
    queue_drops: Vec<QueueCounter>,
    /// The TUN device's interface index and a netlink handle to read its drop counters.
    tun_link: Option<(u32, Mutex<Rtnl>)>,
    socket_buffer: usize,
    /// Where ESP of SAs other cluster nodes serve goes (clustered only).
    esp_forward: std::sync::OnceLock<EspForward>,
    /// Decrypts ESP other nodes forwarded to this one (set by `run`).
    forwarded_rx: Mutex<Option<(Worker, Tun, PacketBuf)>>,
    stop: Arc<AtomicBool>,
}

/// Marks a socket so that its packets bypass the routes into the TUN device
/// ([`crate::routing`]); without the mark, routes that cover a peer's
/// address would send our own IKE and ESP into the tunnel again.
fn mark_outer(sock: socket2::SockRef<'_>, what: &str, routes: bool) {
    if let Err(e) = sock.set_mark(OUTER_MARK) {
        if routes {
            warn!("{what}: cannot set the firewall mark that keeps it out of the tunnel routes: {e}");
        } else {
            debug!("{what}: no firewall mark: {e}");
        }
    }
}

/// Sizes the buffers of a receiving ESP socket and marks it; returns its
/// overflow count (`counting`, from its `count_queue_drops`) if the kernel counts them.
fn prepare_socket(
    sock: BorrowedFd<'_>,
    what: &str,
    bytes: usize,
    marked: bool,
    counting: io::Result<QueueDrops>,
) -> Option<QueueDrops> {
    if let Err(e) = mmsg::set_buffer_sizes(sock.as_raw_fd(), bytes) {
        warn!("{what}: cannot set its buffers to {bytes} bytes: {e}");
    }
    mark_outer(socket2::SockRef::from(&sock), what, marked);
    counting
        .inspect_err(|e| warn!("{what}: receive-queue overflows will not be counted: {e}"))
        .ok()
}

/// Where a receive thread reads ESP: a NAT-T socket, which also carries
/// IKE for `sink`, or the raw ESP socket (boxed: both are large).
enum EspSource {
    NatT { io: Box<UdpIo>, sink: IkeSink },
    Raw(Box<RawEspIo>),
}

impl SoftwareDataPlane {
    /// Opens the TUN device and binds the sockets (threads start with [`SoftwareDataPlane::run`]).
    pub fn open(cfg: &SoftwareConfig) -> io::Result<Self> {
        let queues = Self::open_queues(&cfg.tun_name, cfg.workers.max(1))
            .map_err(|e| io::Error::new(e.kind(), format!("TUN {}: {e}", cfg.tun_name)))?;
        let name = queues.first().map(|q| q.name().to_string()).unwrap_or_default();
        let tun_queue = u32::try_from(cfg.socket_buffer / TUN_QUEUE_BYTES_PER_PACKET)
            .unwrap_or(u32::MAX)
            .max(TUN_MIN_QUEUE);
        let tun_link = match Rtnl::link_index(&name).and_then(|index| {
            let mut rtnl = Rtnl::open()?;
            rtnl.link_up(index, TUN_MTU, tun_queue)?;
            Ok((index, Mutex::new(rtnl)))
        }) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(tun = %name, "could not bring the TUN device up: {e}");
                None
            }
        };
        let routes = match (&tun_link, cfg.install_routes) {
            (Some((index, _)), true) => Some(
                TunRoutes::start(&name, *index)
                    .map_err(|e| io::Error::other(format!("routing for TUN {name}: {e}")))?,
            ),
            _ => None,
        };
        if let Some(r) = &routes {
            r.hold_standing(cfg.standing_routes.clone());
        }
        let marked = routes.is_some();
        let mut nat = Vec::new();
        let mut nat_senders = Vec::new();
        let mut raw = Vec::new();
        let mut queue_drops = Vec::new();
        for ip in &cfg.listen {
            let addr = SocketAddr::new(*ip, cfg.nat_port);
            let mut io = UdpIo::bind(addr, BATCH).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
            // Trains of ESP-in-UDP datagrams from one peer arrive as one buffer;
            // either way IKE up to 64 KiB arrives whole.
            if let Err(e) = io.enable_gro(GRO_MESSAGES) {
                warn!("no UDP GRO on {addr}: {e}");
                io.enable_large_receive(GRO_MESSAGES);
            }
            io.socket().set_read_timeout(Some(Duration::from_millis(100)))?;
            let what = format!("NAT-T socket {addr}");
            if let Some(q) = prepare_socket(
                io.socket().as_fd(),
                &what,
                cfg.socket_buffer,
                marked,
                io.count_queue_drops(),
            ) {
                queue_drops.push(QueueCounter {
                    queue: "nat_t",
                    local: addr.to_string(),
                    drops: q,
                });
            }
            nat_senders.push((addr, io.socket().try_clone()?));
            nat.push(io);
            match RawEspIo::open(*ip, BATCH) {
                Ok(r) => {
                    r.socket().set_read_timeout(Some(Duration::from_millis(100)))?;
                    let what = format!("raw ESP socket {ip}");
                    if let Some(q) = prepare_socket(
                        r.socket().as_fd(),
                        &what,
                        cfg.socket_buffer,
                        marked,
                        r.count_queue_drops(),
                    ) {
                        queue_drops.push(QueueCounter {
                            queue: "raw_esp",
                            local: ip.to_string(),
                            drops: q,
                        });
                    }
                    raw.push(r);
                }
                Err(e) => warn!(address = %ip, "no raw ESP socket (plain ESP disabled): {e}"),
            }
        }
        let children = ChildSas::new(1, cfg.child_settings.clone(), cfg.keylog.as_deref())?;
        info!(tun = %name, queues = queues.len(), offloads = format_args!("{:#x}", queues.first().map(|q| q.offloads()).unwrap_or(0)), socket_buffer = cfg.socket_buffer, "software fastpath ready");
        Ok(Self {
            children,
            tun: Mutex::new(queues),
            nat: Mutex::new(nat),
            nat_senders,
            raw: Mutex::new(raw),
            in_counters: Mutex::new(Vec::new()),
            out_counters: Mutex::new(Vec::new()),
            routes,
            queue_drops,
            tun_link,
            socket_buffer: cfg.socket_buffer,
            esp_forward: std::sync::OnceLock::new(),
            forwarded_rx: Mutex::new(None),
            tun_name: name,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A send-only IPv4 raw socket for packets that carry their own IP header.
    fn open_hdrincl(&self) -> io::Result<socket2::Socket> {
        const IPPROTO_RAW: i32 = 255;
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(IPPROTO_RAW)),
        )?;
        if let Err(e) = mmsg::set_buffer_sizes(s.as_raw_fd(), self.socket_buffer) {
            debug!("IPPROTO_RAW socket buffers: {e}");
        }
        mark_outer(socket2::SockRef::from(&s), "IPPROTO_RAW socket", self.routes.is_some());
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
        self.children.set_lifetime_sink(lifetimes);
        let queues = std::mem::take(&mut *self.tun.lock().map_err(|_| io::Error::other("lock"))?);
        let Some(first) = queues.first() else {
            return Err(io::Error::other("already running"));
        };
        let writer = first.try_clone()?;
        // Forwarded ESP is decrypted by a worker of its own that never
        // forwards again: a packet goes at most one hop between nodes.
        if let Ok(mut f) = self.forwarded_rx.lock() {
            *f = Some((
                self.new_worker(0, true),
                writer.try_clone()?,
                PacketBuf::with_defaults(),
            ));
        }
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
                .spawn(move || me.rx_loop(EspSource::NatT { io: Box::new(io), sink }, out))?;
        }
        for (i, io) in raws.into_iter().enumerate() {
            let me = self.clone();
            let out = writer.try_clone()?;
            std::thread::Builder::new()
                .name(format!("ironsa-esp-raw-{i}"))
                .spawn(move || me.rx_loop(EspSource::Raw(Box::new(io)), out))?;
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
        let w = Worker::new(id, self.children.sad().clone(), self.children.spd().clone()).without_pinning();
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

    /// Decrypts what `source` receives into the TUN device; IKE from a
    /// NAT-T socket goes to its sink.
    fn rx_loop(self: Arc<Self>, mut source: EspSource, mut tun: Tun) {
        let forward = self.esp_forward.get().cloned();
        let mut worker = self.new_worker(0, true);
        if let Some(f) = &forward {
            worker = worker.with_foreign_ranges(f.ranges.clone());
        }
        let (kind, what, meta_init) = match &source {
            EspSource::NatT { io, .. } => {
                let local = io.local_addr().ip();
                let meta = PacketMeta {
                    src: local,
                    dst: Some(local),
                    src_port: 0,
                };
                (InboundKind::Udp, "NAT-T", meta)
            }
            EspSource::Raw(_) => {
                let meta = PacketMeta {
                    src: IpAddr::from([0u8, 0, 0, 0]),
                    dst: None,
                    src_port: 0,
                };
                (InboundKind::RawEsp, "raw ESP", meta)
            }
        };
        let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::with_defaults()).collect();
        let mut meta = vec![meta_init; BATCH];
        let mut verdicts = vec![Verdict::Keepalive; BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            let received = match &mut source {
                EspSource::NatT { io, .. } => io.recv_burst(&mut bufs, &mut meta, true),
                EspSource::Raw(io) => io.recv_burst(&mut bufs, &mut meta, true),
            };
            let n = match received {
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
                    warn!("{what} receive failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            worker.inbound_burst(kind, &mut bufs[..n], &meta[..n], &mut verdicts[..n]);
            Self::to_tunnel(&mut tun, &bufs[..n], &verdicts[..n]);
            if let Some(f) = &forward {
                let local_port = match &source {
                    EspSource::NatT { io, .. } => io.local_addr().port(),
                    EspSource::Raw(_) => 0,
                };
                for i in (0..n).filter(|i| verdicts[*i] == Verdict::Foreign) {
                    let m = &meta[i];
                    let data = bufs[i].data();
                    let Some(spi) = data.get(..4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])) else {
                        continue;
                    };
                    let local = SocketAddr::new(m.dst.unwrap_or(meta_init.src), local_port);
                    (f.send)(
                        spi,
                        local,
                        SocketAddr::new(m.src, m.src_port),
                        kind == InboundKind::Udp,
                        data,
                    );
                }
            }
            if let EspSource::NatT { io, sink } = &mut source {
                let local = io.local_addr();
                for i in 0..n {
                    if verdicts[i] == Verdict::Ike {
                        sink(
                            local,
                            SocketAddr::new(meta[i].src, meta[i].src_port),
                            bufs[i].data().to_vec(),
                        );
                    }
                }
                for (from, ike) in io.drain_large_ike() {
                    sink(local, from, ike);
                }
            }
        }
    }

    /// Reads the TUN queue, cuts super-packets into MTU-sized packets (GSO),
    /// encrypts them in batches and sends them with `sendmmsg`.
    fn tx_loop(self: Arc<Self>, id: usize, mut tun: Tun, raw: Option<RawEspIo>) {
        let mut worker = self.new_worker(id, false);
        let hdrincl = raw.as_ref().and_then(|_| match self.open_hdrincl() {
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

    /// Overflow counts of every receive queue: (queue, local address or
    /// device, packets dropped). The TUN device's queues are its interface
    /// counters: `tun_read` is its transmit drops (packets routed to us while
    /// its queue was full), `tun_write` its receive drops (packets we wrote
    /// that the kernel did not take).
    fn receive_queue_drops(&self) -> Vec<(&'static str, String, u64)> {
        let mut v: Vec<_> = self
            .queue_drops
            .iter()
            .map(|q| (q.queue, q.local.clone(), q.drops.get()))
            .collect();
        if let Some((index, rtnl)) = &self.tun_link {
            let drops = rtnl
                .lock()
                .map_err(|_| None)
                .and_then(|mut r| r.link_drops(*index).map_err(Some));
            match drops {
                Ok(LinkDrops { rx_dropped, tx_dropped }) => {
                    v.push(("tun_read", self.tun_name.clone(), tx_dropped));
                    v.push(("tun_write", self.tun_name.clone(), rx_dropped));
                }
                Err(e) => debug!(tun = %self.tun_name, "TUN counters unavailable: {e:?}"),
            }
        }
        v
    }
}

impl DataPlane for SoftwareDataPlane {
    fn set_child_settings(&self, settings: ChildSettings) {
        self.children.set_settings(settings);
    }

    fn install(&self, c: &ChildSaInstall) {
        let installed = self.children.install(c);
        if let (Some(_), Some(routes)) = (installed, &self.routes) {
            // A rekey's new child holds the routes too, so they outlive the old one.
            routes.hold_addresses(c.spi_in, &c.local_vips);
            routes.hold(c.spi_in, Route::for_child(c));
        }
    }

    fn remove(&self, spi_in: u32, _spi_out: u32) {
        self.children.remove(spi_in);
        if let Some(routes) = &self.routes {
            routes.release(spi_in);
        }
    }

    fn move_children(&self, spis_in: &[u32], local: SocketAddr, remote: SocketAddr, udp_encap: bool) {
        self.children.move_children(spis_in, local, remote, udp_encap);
    }

    fn esp_received(&self, _local: SocketAddr, _remote: SocketAddr, _packet: &[u8]) {
        // The fastpath owns the NAT-T sockets; the control plane never reads ESP.
    }

    fn set_esp_forward(&self, forward: EspForward) {
        if self.esp_forward.set(forward).is_err() {
            warn!("ESP forwarding between cluster nodes was set up twice; the first setting stays");
        }
    }

    fn esp_forwarded(&self, local: SocketAddr, remote: SocketAddr, udp: bool, packet: &[u8]) {
        let Ok(mut rx) = self.forwarded_rx.lock() else { return };
        let Some((worker, tun, buf)) = rx.as_mut() else {
            debug!("ESP forwarded by another node before the data plane runs; dropped");
            return;
        };
        if buf.set_data(packet).is_err() {
            debug!(len = packet.len(), "forwarded ESP larger than a packet buffer; dropped");
            return;
        }
        let meta = PacketMeta {
            src: remote.ip(),
            dst: Some(local.ip()),
            src_port: remote.port(),
        };
        let kind = if udp { InboundKind::Udp } else { InboundKind::RawEsp };
        let verdict = worker.inbound_packet(kind, buf, &meta);
        Self::to_tunnel(tun, std::slice::from_ref(buf), &[verdict]);
    }

    fn ike_event(&self, _event: &Event) {}

    fn child_counters(&self, child: &control::ike_sa::ChildSa) -> Option<ChildCounters> {
        self.children.counters(child)
    }

    fn esp_sa_counters(
        &self,
        spi_in: u32,
        local_ts: &[control::wire::ikev2::TrafficSelector],
        remote_ts: &[control::wire::ikev2::TrafficSelector],
    ) -> Option<ChildCounters> {
        self.children.counters_of(spi_in, local_ts, remote_ts)
    }

    fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        self.children.spi_allocator()
    }

    fn set_spi_node(&self, node: ironsa::cluster::NodeId) {
        self.children.set_spi_node(node);
    }

    fn esp_seq_out(&self, spi_in: u32) -> Option<u64> {
        self.children.outbound_seq(spi_in)
    }

    fn set_esp_seq_out(&self, spi_in: u32, seq: u64) -> bool {
        self.children.set_outbound_seq(spi_in, seq)
    }

    fn esp_seq_in(&self, spi_in: u32) -> Option<u64> {
        self.children.inbound_seq(spi_in)
    }

    fn set_esp_seq_in(&self, spi_in: u32, top: u64) -> bool {
        self.children.resume_inbound_seq(spi_in, top)
    }

    fn claim_spi(&self, spi_in: u32) -> bool {
        self.children.claim_spi(spi_in)
    }

    fn metrics(&self) -> String {
        let mut out = self.children.sa_gauge();
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
        let _ = writeln!(
            out,
            "# HELP ironsa_receive_queue_drops_total packets the kernel dropped because a data-plane receive queue was full\n# TYPE ironsa_receive_queue_drops_total counter"
        );
        for (queue, local, n) in self.receive_queue_drops() {
            let _ = writeln!(
                out,
                "ironsa_receive_queue_drops_total{{queue=\"{queue}\",local=\"{local}\"}} {n}"
            );
        }
        out
    }

    fn stats(&self) -> Option<Value> {
        let queues: Vec<Value> = self
            .receive_queue_drops()
            .into_iter()
            .map(|(queue, local, drops)| json!({ "queue": queue, "local": local, "drops": drops }))
            .collect();
        Some(json!({
            "backend": "software",
            "tun": self.tun_name,
            "socket_buffer": self.socket_buffer,
            "receive_queue_drops": queues,
        }))
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = &self.routes {
            r.stop();
        }
    }
}

impl Drop for SoftwareDataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
