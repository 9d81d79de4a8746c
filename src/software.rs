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
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::ike_sa::{ChildSaInstall, Event, SpiAllocator};
use fastpath::buf::{PacketBuf, PacketBuffer};
use fastpath::io::mmsg::{self, MmsgScratch};
use fastpath::io::raw::RawEspIo;
use fastpath::io::tun::{Tun, TunOptions};
use fastpath::io::udp::UdpIo;
use fastpath::stats::DropReason;
use fastpath::worker::{InboundKind, PacketMeta, Verdict, Worker, WorkerCounters};
use tracing::{debug, info, warn};

use crate::child_sas::{ChildSas, ChildSettings, IkeSink, Installed, LifetimeSink};
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
    install_routes: bool,
    stop: Arc<AtomicBool>,
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
        let children = ChildSas::new(1, cfg.child_settings.clone(), cfg.keylog.as_deref())?;
        info!(tun = %name, queues = queues.len(), offloads = format_args!("{:#x}", queues.first().map(|q| q.offloads()).unwrap_or(0)), "software fastpath ready");
        Ok(Self {
            children,
            tun_name: name,
            tun: Mutex::new(queues),
            nat: Mutex::new(nat),
            nat_senders,
            raw: Mutex::new(raw),
            in_counters: Mutex::new(Vec::new()),
            out_counters: Mutex::new(Vec::new()),
            install_routes: cfg.install_routes,
            stop: Arc::new(AtomicBool::new(false)),
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
        self.children.set_lifetime_sink(lifetimes);
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
}

impl DataPlane for SoftwareDataPlane {
    fn set_child_settings(&self, settings: ChildSettings) {
        self.children.set_settings(settings);
    }

    fn install(&self, c: &ChildSaInstall) {
        let installed = self.children.install(c, &**self.children.sad());
        if installed == Some(Installed::New) && self.install_routes {
            for r in &c.remote_ts {
                self.route(r, true);
            }
        }
    }

    fn remove(&self, spi_in: u32, _spi_out: u32) {
        self.children.remove(spi_in, &**self.children.sad());
    }

    fn esp_received(&self, _local: SocketAddr, _remote: SocketAddr, _packet: &[u8]) {
        // The fastpath owns the NAT-T sockets; the control plane never reads ESP.
    }

    fn ike_event(&self, _event: &Event) {}

    fn child_counters(&self, spi_in: u32) -> Option<ChildCounters> {
        self.children.counters(spi_in)
    }

    fn spi_allocator(&self) -> Arc<dyn SpiAllocator> {
        self.children.spi_allocator()
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
        out
    }
}

impl Drop for SoftwareDataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
