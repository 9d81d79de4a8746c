//! Hardware probe report (ports, crypto devices, security offloads), the data
//! behind `ironsa hw-probe`.

use crate::cryptodev::{AeadCaps, CryptoDev};
use crate::eal::Eal;
use crate::error::Result;
use crate::ethdev::{EthPort, port_ids};
use crate::security::SecuritySupport;

/// One Ethernet port in a [`ProbeReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReport {
    /// Port id.
    pub id: u16,
    /// Device name.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Max rx / tx queues.
    pub max_queues: (u16, u16),
    /// Supported RSS hash functions (`RTE_ETH_RSS_*`; 0 = no RSS).
    pub rss_offloads: u64,
    /// Receive offload capabilities.
    pub rx_offload_capa: u64,
    /// Transmit offload capabilities.
    pub tx_offload_capa: u64,
    /// rte_security support.
    pub security: SecuritySupport,
}

/// One crypto device in a [`ProbeReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoReport {
    /// Device id.
    pub id: u8,
    /// Device name.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Max queue pairs.
    pub max_queue_pairs: u32,
    /// AES-GCM capability, if any.
    pub aes_gcm: Option<AeadCaps>,
    /// rte_security support (lookaside).
    pub security: SecuritySupport,
}

/// Everything DPDK can see in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// lcores in use.
    pub lcores: u32,
    /// Ethernet ports.
    pub ports: Vec<PortReport>,
    /// Crypto devices.
    pub crypto: Vec<CryptoReport>,
}

/// Probe every port and crypto device (EAL must be initialised).
pub fn probe(eal: &Eal) -> Result<ProbeReport> {
    let mut ports = Vec::new();
    for id in port_ids(eal) {
        let port = EthPort::by_id(eal, id)?;
        let info = port.info()?;
        ports.push(PortReport {
            id,
            name: info.name,
            driver: info.driver,
            max_queues: (info.max_rx_queues, info.max_tx_queues),
            rss_offloads: info.rss_offloads,
            rx_offload_capa: info.rx_offload_capa,
            tx_offload_capa: info.tx_offload_capa,
            security: port.security(),
        });
    }
    let crypto = CryptoDev::all(eal)
        .into_iter()
        .map(|dev| {
            let info = dev.info();
            CryptoReport {
                id: info.id,
                name: info.name,
                driver: info.driver,
                max_queue_pairs: info.max_queue_pairs,
                aes_gcm: info.aes_gcm,
                security: dev.security(),
            }
        })
        .collect();
    Ok(ProbeReport {
        lcores: eal.lcore_count(),
        ports,
        crypto,
    })
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "lcores: {}", self.lcores)?;
        for p in &self.ports {
            let sec = match &p.security {
                SecuritySupport::None => "none".to_string(),
                SecuritySupport::Capabilities(c) => format!("{} capabilities", c.len()),
            };
            writeln!(
                f,
                "port {} {} driver={} queues={}/{} rss=0x{:x} rx_offloads=0x{:x} tx_offloads=0x{:x} security={}",
                p.id,
                p.name,
                p.driver,
                p.max_queues.0,
                p.max_queues.1,
                p.rss_offloads,
                p.rx_offload_capa,
                p.tx_offload_capa,
                sec
            )?;
        }
        for c in &self.crypto {
            let gcm = match &c.aes_gcm {
                Some(caps) => format!(
                    "aes-gcm keys {}..{} step {}",
                    caps.key_size.min, caps.key_size.max, caps.key_size.increment
                ),
                None => "no aes-gcm".to_string(),
            };
            let sec = match &c.security {
                SecuritySupport::None => "none".to_string(),
                SecuritySupport::Capabilities(caps) => format!("{} capabilities", caps.len()),
            };
            writeln!(
                f,
                "cryptodev {} {} driver={} qps={} {} security={}",
                c.id, c.name, c.driver, c.max_queue_pairs, gcm, sec
            )?;
        }
        Ok(())
    }
}
