//! `ironsa hw-probe`: what DPDK sees (ports, drivers, offloads, security
//! capabilities, crypto devices) and which hardware profile fits.

use super::DpdkError;
use super::profile::{BackendKind, CryptoMode, HwProfile};
use ffi::{Eal, ProbeReport, SecuritySupport};

/// EAL arguments for a probe run: PCI scan on, no hugepages needed, no
/// shared files, quiet logs. Add `--vdev=...` / `-a <pci>` as needed.
pub const DEFAULT_PROBE_EAL_ARGS: &[&str] = &[
    "-l",
    "0",
    "--no-huge",
    "-m",
    "256",
    "--no-shconf",
    "--log-level=lib.eal:error",
];

/// Probe results and the profile choice.
#[derive(Debug, Clone)]
pub struct HwReport {
    /// What DPDK sees.
    pub devices: ProbeReport,
    /// Every candidate profile with why it does or does not fit.
    pub candidates: Vec<(String, Result<(), String>)>,
    /// The best fitting profile's name: inline, then hardware lookaside,
    /// then the CPU crypto modes by measured speed (intel-ipsec-mb on the
    /// worker cores, aws-lc, a software crypto device), then software.
    pub best: Option<String>,
}

/// Whether `profile` can run on `devices`; `Err` says why not.
pub fn profile_fits(profile: &HwProfile, devices: &ProbeReport) -> Result<(), String> {
    if profile.backend == BackendKind::Software {
        return Ok(());
    }
    let m = &profile.matches;
    let ports: Vec<_> = devices
        .ports
        .iter()
        .filter(|p| m.port_drivers.is_empty() || m.port_drivers.contains(&p.driver))
        .collect();
    if ports.is_empty() {
        return Err(if devices.ports.is_empty() {
            "no DPDK ports".into()
        } else {
            format!("no port with driver {}", m.port_drivers.join("/"))
        });
    }
    if m.inline_ipsec && !ports.iter().any(|p| p.security.has_inline_ipsec()) {
        return Err("no port with rte_security inline IPsec".into());
    }
    if !m.crypto_drivers.is_empty()
        && !devices
            .crypto
            .iter()
            .any(|c| m.crypto_drivers.contains(&c.driver) && c.aes_gcm.is_some())
    {
        return Err(format!("no AES-GCM crypto device of {}", m.crypto_drivers.join("/")));
    }
    if profile.crypto.mode == CryptoMode::CpuIpsecMb {
        if let Err(e) = ffi::ImbGcm::new(&[0; 16]) {
            return Err(format!("intel-ipsec-mb AES-GCM is not usable on this CPU: {e}"));
        }
    }
    if profile.crypto.mode == CryptoMode::Lookaside && m.crypto_drivers.is_empty() {
        let name = profile.crypto.device.as_deref().unwrap_or_default();
        if !devices.crypto.iter().any(|c| c.name == name) {
            return Err(format!("no crypto device {name}"));
        }
    }
    Ok(())
}

/// How a fitting profile ranks: hardware first (inline, then a hardware
/// lookaside device), then the CPU crypto modes in the order `dpdk-bench`
/// measures them (intel-ipsec-mb's direct API ahead of aws-lc, aws-lc ahead
/// of the software crypto devices `crypto_aesni_gcm`/`crypto_openssl`, whose
/// enqueue/dequeue costs more than the CPU call it wraps).
fn specificity(p: &HwProfile) -> u32 {
    match (p.backend, p.crypto.mode) {
        (BackendKind::Software, _) => 0,
        (_, CryptoMode::Inline) => 5,
        (_, CryptoMode::Lookaside)
            if p.matches
                .crypto_drivers
                .iter()
                .any(|d| !d.contains("aesni") && !d.contains("openssl")) =>
        {
            4
        }
        (_, CryptoMode::CpuIpsecMb) => 3,
        (_, CryptoMode::Cpu) => 2,
        (_, CryptoMode::Lookaside) => 1,
    }
}

impl HwReport {
    /// Rates `profiles` against `devices` (EAL already initialised).
    pub fn new(devices: ProbeReport, profiles: &[HwProfile]) -> Self {
        let candidates: Vec<_> = profiles
            .iter()
            .map(|p| (p.name.clone(), profile_fits(p, &devices)))
            .collect();
        let best = profiles
            .iter()
            .filter(|p| profile_fits(p, &devices).is_ok())
            .max_by_key(|p| specificity(p))
            .map(|p| p.name.clone());
        Self {
            devices,
            candidates,
            best,
        }
    }
}

impl std::fmt::Display for HwReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.devices)?;
        for p in &self.devices.ports {
            if let SecuritySupport::Capabilities(caps) = &p.security {
                for c in caps.iter().filter(|c| c.is_ipsec()) {
                    writeln!(
                        f,
                        "  port {} ipsec {:?} {} {} replay_window<={}",
                        p.name,
                        c.action,
                        if c.ipsec_tunnel { "tunnel" } else { "transport" },
                        if c.ipsec_ingress { "ingress" } else { "egress" },
                        c.replay_window_max
                    )?;
                }
            }
        }
        let inline = self.devices.ports.iter().any(|p| p.security.has_inline_ipsec());
        writeln!(
            f,
            "inline ipsec: {}",
            if inline {
                "available"
            } else {
                "none (software fallback)"
            }
        )?;
        for (name, fit) in &self.candidates {
            match fit {
                Ok(()) => writeln!(f, "profile {name}: fits")?,
                Err(why) => writeln!(f, "profile {name}: no ({why})")?,
            }
        }
        match &self.best {
            Some(b) => writeln!(f, "recommended profile: {b}"),
            None => writeln!(f, "recommended profile: none"),
        }
    }
}

/// Initialises EAL with `eal_args` (once per process), probes the devices and
/// rates `profiles`. For `ironsa hw-probe`: print the result with `{}`.
pub fn hw_probe<S: AsRef<str>>(eal_args: &[S], profiles: &[HwProfile]) -> Result<HwReport, DpdkError> {
    let eal = Eal::init(eal_args)?;
    probe_with(&eal, profiles)
}

/// Probes with an already initialised EAL.
pub fn probe_with(eal: &Eal, profiles: &[HwProfile]) -> Result<HwReport, DpdkError> {
    Ok(HwReport::new(ffi::probe(eal)?, profiles))
}
