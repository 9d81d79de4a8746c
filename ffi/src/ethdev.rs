//! Ethernet ports (`rte_ethdev`): configuration, queues, bursts, stats.

use std::os::raw::c_char;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::eal::Eal;
use crate::error::{Error, Result, c_string, check, owned_c_str};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use crate::sys;

/// Largest burst handled in one call (mbuf pointer array on the stack).
pub const MAX_BURST: usize = 64;

/// Offload flag bits (`RTE_ETH_{RX,TX}_OFFLOAD_*` of DPDK 22.11; the C shim
/// checks these values against the headers at build time).
pub mod offload {
    /// Receive: IPv4 header checksum verified.
    pub const RX_IPV4_CKSUM: u64 = 1 << 1;
    /// Receive: UDP checksum verified.
    pub const RX_UDP_CKSUM: u64 = 1 << 2;
    /// Receive: TCP checksum verified.
    pub const RX_TCP_CKSUM: u64 = 1 << 3;
    /// Receive: multi-segment (scatter) receive.
    pub const RX_SCATTER: u64 = 1 << 13;
    /// Receive: inline IPsec (rte_security).
    pub const RX_SECURITY: u64 = 1 << 15;
    /// Receive: RSS hash delivered in the mbuf.
    pub const RX_RSS_HASH: u64 = 1 << 19;
    /// Transmit: IPv4 header checksum computed.
    pub const TX_IPV4_CKSUM: u64 = 1 << 1;
    /// Transmit: UDP checksum computed.
    pub const TX_UDP_CKSUM: u64 = 1 << 2;
    /// Transmit: TCP checksum computed.
    pub const TX_TCP_CKSUM: u64 = 1 << 3;
    /// Transmit: multi-segment packets.
    pub const TX_MULTI_SEGS: u64 = 1 << 15;
    /// Transmit: mbufs come from one pool and have refcount 1.
    pub const TX_MBUF_FAST_FREE: u64 = 1 << 16;
    /// Transmit: inline IPsec (rte_security).
    pub const TX_SECURITY: u64 = 1 << 17;
}

/// Ports already configured in this process. A port is configured once:
/// reconfiguring would release queues that existing [`RxQueue`]/[`TxQueue`]
/// handles still poll (DPDK does not check queue ids on the fast path).
static CONFIGURED: [AtomicBool; sys::RTE_MAX_ETHPORTS as usize] =
    [const { AtomicBool::new(false) }; sys::RTE_MAX_ETHPORTS as usize];

/// Receive pools handed to ports, kept alive for the life of the process
/// (drivers allocate from them on every receive burst).
static PORT_POOLS: Mutex<Vec<Mempool>> = Mutex::new(Vec::new());

/// An Ethernet port (physical NIC or vdev such as `net_ring0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthPort {
    id: u16,
}

/// Static information about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Port id.
    pub id: u16,
    /// Device name (`net_ring0`, `0000:03:00.0`...).
    pub name: String,
    /// PMD driver name (`net_ring`, `net_ice`...).
    pub driver: String,
    /// Maximum receive queues.
    pub max_rx_queues: u16,
    /// Maximum transmit queues.
    pub max_tx_queues: u16,
    /// Receive offload capabilities (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offload_capa: u64,
    /// Transmit offload capabilities (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
    /// RSS hash functions supported (`RTE_ETH_RSS_*`); 0 = no RSS.
    pub rss_offloads: u64,
    /// RSS redirection table size.
    pub reta_size: u16,
    /// RSS key size in bytes.
    pub hash_key_size: u8,
    /// Inline IPsec crypto on receive (`RX_OFFLOAD_SECURITY`).
    pub rx_inline_security: bool,
    /// Inline IPsec crypto on transmit (`TX_OFFLOAD_SECURITY`).
    pub tx_inline_security: bool,
}

/// How to configure a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Number of receive queues (>= 1).
    pub rx_queues: u16,
    /// Number of transmit queues (>= 1).
    pub tx_queues: u16,
    /// Receive descriptors per queue.
    pub rx_descriptors: u16,
    /// Transmit descriptors per queue.
    pub tx_descriptors: u16,
    /// Spread receive over queues by RSS when there is more than one queue and
    /// the device supports it (IP/UDP/TCP hash, restricted to what it offers).
    pub rss: bool,
    /// Requested receive offloads, masked by the device's capabilities.
    pub rx_offloads: u64,
    /// Requested transmit offloads, masked by the device's capabilities.
    pub tx_offloads: u64,
    /// Enable promiscuous mode after start (errors from vdevs are ignored).
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: true,
            rx_offloads: 0,
            tx_offloads: 0,
            promiscuous: true,
        }
    }
}

/// Port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets dropped because the receive queues were full.
    pub imissed: u64,
    /// Receive errors.
    pub ierrors: u64,
    /// Transmit errors.
    pub oerrors: u64,
    /// Receive failures for lack of mbufs.
    pub rx_nombuf: u64,
    /// Per receive queue packets (first 16 queues, as DPDK counts them).
    pub q_ipackets: Vec<u64>,
    /// Per transmit queue packets (first 16 queues).
    pub q_opackets: Vec<u64>,
    /// Per queue errors (first 16 queues).
    pub q_errors: Vec<u64>,
}

/// The queues of a configured port. Each queue handle may be moved to one
/// worker thread; bursts take `&mut self`, so a queue is never polled by two
/// threads at once (DPDK queues are not thread-safe).
#[derive(Debug)]
pub struct PortQueues {
    /// Receive queues, index = queue id.
    pub rx: Vec<RxQueue>,
    /// Transmit queues, index = queue id.
    pub tx: Vec<TxQueue>,
}

/// One receive queue of a port.
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// One transmit queue of a port.
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

/// Ids of all usable ports.
pub fn port_ids(_eal: &Eal) -> Vec<u16> {
    (0..sys::RTE_MAX_ETHPORTS as u16)
        // SAFETY: EAL initialised; any id is accepted by is_valid_port.
        .filter(|&id| unsafe { sys::rte_eth_dev_is_valid_port(id) } != 0)
        .collect()
}

impl EthPort {
    /// The port with id `id`.
    pub fn by_id(_eal: &Eal, id: u16) -> Result<EthPort> {
        // SAFETY: EAL initialised; any id is accepted.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(Error::NotFound(format!("ethdev port {id}")));
        }
        Ok(EthPort { id })
    }

    /// The port whose device name is `name` (e.g. `net_ring0`).
    pub fn by_name(_eal: &Eal, name: &str) -> Result<EthPort> {
        let cname = c_string("port name", name)?;
        let mut id = 0u16;
        // SAFETY: cname is NUL-terminated; id is a valid out pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret != 0 {
            return Err(Error::NotFound(format!("ethdev port named {name:?}")));
        }
        Ok(EthPort { id })
    }

    /// Port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Device name.
    pub fn name(&self) -> Result<String> {
        let mut buf = [0 as c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: buf is RTE_ETH_NAME_MAX_LEN bytes as the API requires.
        check("rte_eth_dev_get_name_by_port", unsafe {
            sys::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr())
        })?;
        // SAFETY: DPDK wrote a NUL-terminated name into buf.
        Ok(unsafe { owned_c_str(buf.as_ptr()) })
    }

    fn raw_info(&self) -> Result<sys::rte_eth_dev_info> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out struct of the right type.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(self.id, &mut info)
        })?;
        Ok(info)
    }

    /// Device information and offload capabilities.
    pub fn info(&self) -> Result<PortInfo> {
        let info = self.raw_info()?;
        let (rx_sec, tx_sec) = (offload::RX_SECURITY, offload::TX_SECURITY);
        Ok(PortInfo {
            id: self.id,
            name: self.name()?,
            // SAFETY: driver_name is NULL or a static NUL-terminated string.
            driver: unsafe { owned_c_str(info.driver_name) },
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            rx_offload_capa: info.rx_offload_capa,
            tx_offload_capa: info.tx_offload_capa,
            rss_offloads: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            hash_key_size: info.hash_key_size,
            rx_inline_security: info.rx_offload_capa & rx_sec != 0,
            tx_inline_security: info.tx_offload_capa & tx_sec != 0,
        })
    }

    /// NUMA socket of the device (`-1` when unknown).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: self.id is a valid port.
        unsafe { sys::rte_eth_dev_socket_id(self.id) }
    }

    /// Configure the port and set up its queues, with receive buffers from
    /// `pool` (kept alive from then on). A port can be configured once per
    /// process; a second call fails. Returns one handle per queue.
    pub fn configure(&self, config: &PortConfig, pool: &Mempool) -> Result<PortQueues> {
        if config.rx_queues == 0 || config.tx_queues == 0 {
            return Err(Error::InvalidArgument(
                "a port needs at least one rx and one tx queue".into(),
            ));
        }
        let info = self.raw_info()?;
        let slot = CONFIGURED
            .get(usize::from(self.id))
            .ok_or_else(|| Error::NotFound(format!("ethdev port {}", self.id)))?;
        if slot.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(format!(
                "port {} is already configured (once per process)",
                self.id
            )));
        }
        PORT_POOLS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(pool.clone());
        if config.rx_queues > info.max_rx_queues || config.tx_queues > info.max_tx_queues {
            return Err(Error::Unsupported(format!(
                "port {} supports at most {} rx / {} tx queues, asked {} / {}",
                self.id, info.max_rx_queues, info.max_tx_queues, config.rx_queues, config.tx_queues
            )));
        }
        let mut conf = sys::rte_eth_conf::default();
        // SAFETY: immutable globals defined by the shim.
        let wanted_rss = unsafe { sys::ironsa_rss_ip | sys::ironsa_rss_udp | sys::ironsa_rss_tcp };
        let rss_hf = wanted_rss & info.flow_type_rss_offloads;
        if config.rss && config.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
        }
        conf.rxmode.offloads = config.rx_offloads & info.rx_offload_capa;
        conf.txmode.offloads = config.tx_offloads & info.tx_offload_capa;
        // SAFETY: conf is a fully initialised rte_eth_conf; DPDK copies it.
        check("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(self.id, config.rx_queues, config.tx_queues, &conf)
        })?;
        // -1 (unknown) becomes SOCKET_ID_ANY, which DPDK takes as unsigned.
        let socket = self.socket_id() as u32;
        for q in 0..config.rx_queues {
            // SAFETY: port configured with rx_queues queues; NULL rxconf means
            // driver defaults; pool is a live pktmbuf pool. The pool must
            // outlive the port's use of it: Mempool leaks itself on drop while
            // buffers are out, and queued receive buffers count as in use.
            check("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    config.rx_descriptors,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            })?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: port configured with tx_queues queues; NULL txconf means
            // driver defaults.
            check("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(self.id, q, config.tx_descriptors, socket, std::ptr::null())
            })?;
        }
        Ok(PortQueues {
            rx: (0..config.rx_queues)
                .map(|queue| RxQueue { port: self.id, queue })
                .collect(),
            tx: (0..config.tx_queues)
                .map(|queue| TxQueue { port: self.id, queue })
                .collect(),
        })
    }

    /// Start the port (after `configure`).
    pub fn start(&self) -> Result<()> {
        // SAFETY: self.id is a valid port.
        check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(self.id) })?;
        Ok(())
    }

    /// Enable promiscuous mode.
    pub fn promiscuous_enable(&self) -> Result<()> {
        // SAFETY: self.id is a valid port.
        check("rte_eth_promiscuous_enable", unsafe {
            sys::rte_eth_promiscuous_enable(self.id)
        })?;
        Ok(())
    }

    /// Stop the port. Bursts on its queues then return nothing.
    pub fn stop(&self) -> Result<()> {
        // SAFETY: self.id is a valid port.
        check("rte_eth_dev_stop", unsafe { sys::rte_eth_dev_stop(self.id) })?;
        Ok(())
    }

    /// Port and per-queue counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: s is a valid out struct.
        check("rte_eth_stats_get", unsafe { sys::rte_eth_stats_get(self.id, &mut s) })?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            q_ipackets: s.q_ipackets.to_vec(),
            q_opackets: s.q_opackets.to_vec(),
            q_errors: s.q_errors.to_vec(),
        })
    }

    /// Reset the counters.
    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: self.id is a valid port.
        check("rte_eth_stats_reset", unsafe { sys::rte_eth_stats_reset(self.id) })?;
        Ok(())
    }

    /// MAC address of the port.
    pub fn mac_address(&self) -> Result<[u8; 6]> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: addr is a valid out struct.
        check("rte_eth_macaddr_get", unsafe {
            sys::rte_eth_macaddr_get(self.id, &mut addr)
        })?;
        Ok(addr.addr_bytes)
    }

    /// The port's rte_security context (NULL when it has no inline crypto).
    pub(crate) fn security_ctx_ptr(&self) -> *mut std::os::raw::c_void {
        // SAFETY: self.id is a valid port; returns NULL when unsupported.
        unsafe { sys::rte_eth_dev_get_sec_ctx(self.id) }
    }
}

impl RxQueue {
    /// Port id of this queue.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receive up to `max` packets (capped at [`MAX_BURST`]), appending them
    /// to `out`; returns how many arrived.
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let n = max.min(MAX_BURST);
        out.reserve(n);
        let len = out.len();
        // The driver writes the received mbufs straight into `out`'s spare
        // capacity (an `Mbuf` is a transparent mbuf pointer).
        let slots = out.spare_capacity_mut().as_mut_ptr().cast::<*mut sys::rte_mbuf>();
        // SAFETY: `slots` has room for n >= the pointers written; &mut self
        // makes this the only poller of (port, queue).
        let got = unsafe { sys::ironsa_eth_rx_burst(self.port, self.queue, slots, n as u16) };
        let got = usize::from(got).min(n);
        // SAFETY: the driver initialised `got` slots with mbufs it hands over.
        let received = unsafe { std::slice::from_raw_parts(slots.cast_const(), got) };
        if received.iter().any(|m| m.is_null()) {
            // Not done by any driver; keep the non-null ones without gaps.
            let kept: Vec<*mut sys::rte_mbuf> = received.iter().copied().filter(|m| !m.is_null()).collect();
            for m in kept {
                if let Some(m) = std::ptr::NonNull::new(m) {
                    // SAFETY: the driver hands over ownership of each received mbuf.
                    out.push(unsafe { Mbuf::from_raw(m) });
                }
            }
            return got;
        }
        // SAFETY: the `got` slots after `len` hold valid, non-null mbufs now
        // owned by `out` (Mbuf is repr(transparent) over NonNull<rte_mbuf>).
        unsafe { out.set_len(len + got) };
        got
    }
}

impl TxQueue {
    /// Port id of this queue.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmit packets from the front of `pkts` (up to [`MAX_BURST`] per
    /// call); sent packets are removed from `pkts`, unsent ones stay there in
    /// order. Returns how many were sent.
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let n = pkts.len().min(MAX_BURST);
        // SAFETY: the first n elements of `pkts` are valid mbufs, laid out as
        // mbuf pointers (Mbuf is repr(transparent)); the driver reads that
        // array only; &mut self makes this the only user of (port, queue).
        let sent = unsafe { sys::ironsa_eth_tx_burst(self.port, self.queue, pkts.as_mut_ptr().cast(), n as u16) };
        let sent = usize::from(sent).min(n);
        // The driver now owns the first `sent` mbufs: take them out of the
        // Vec without dropping (freeing) them, and move the rest down.
        let rest = pkts.len() - sent;
        // SAFETY: elements [sent, len) are moved to [0, rest) (ptr::copy
        // handles the overlap); the length then covers exactly them.
        unsafe {
            std::ptr::copy(pkts.as_ptr().add(sent), pkts.as_mut_ptr(), rest);
            pkts.set_len(rest);
        }
        sent
    }

    /// Transmit every packet of `pkts`, retrying while the queue accepts some;
    /// packets still unsent after `retries` empty attempts are freed. Returns
    /// the number sent.
    pub fn tx_all(&mut self, pkts: &mut Vec<Mbuf>, retries: usize) -> usize {
        let mut sent = 0;
        let mut idle = 0;
        while !pkts.is_empty() && idle <= retries {
            let n = self.tx_burst(pkts);
            if n == 0 {
                idle += 1;
            } else {
                sent += n;
            }
        }
        pkts.clear();
        sent
    }
}
