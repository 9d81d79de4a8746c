//! rte_flow rules that hand an inline SA's ESP to its rte_security session.
//!
//! NICs with inline IPsec decrypt a received packet only when a flow rule
//! matches it (outer addresses, the UDP port with NAT-T, the SPI) and names
//! the session in a `SECURITY` action; some also want an egress rule for the
//! SAs they encrypt. An ingress rule also needs a fate the driver accepts:
//! [`IngressFate`]s are tried in order with `rte_flow_validate`, and the first
//! accepted one is created. A rule lives as long as its [`SecurityFlow`].

use std::net::IpAddr;
use std::os::raw::{c_char, c_void};
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::ethdev::EthPort;
use crate::security::{InlineIpsecSa, InlineSession};
use crate::sys;

/// What follows the `SECURITY` action of an ingress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressFate {
    /// Deliver to this receive queue (the poll loop that owns the SA).
    Queue(u16),
    /// Let the port's other rules (RSS) place the packet.
    Passthru,
    /// No fate action (drivers that imply one).
    Unspecified,
}

impl IngressFate {
    /// The fates tried for an ingress rule, most specific first.
    pub fn candidates(rx_queue: u16) -> [IngressFate; 3] {
        [
            IngressFate::Queue(rx_queue),
            IngressFate::Passthru,
            IngressFate::Unspecified,
        ]
    }

    fn raw(self) -> (u16, i32) {
        match self {
            IngressFate::Queue(q) => (q, 0),
            IngressFate::Passthru => (0, 1),
            IngressFate::Unspecified => (0, 2),
        }
    }
}

/// Pattern items and actions of a rule (a subset of DPDK's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPart {
    /// `ETH` (any).
    Eth,
    /// `IPV4`.
    Ipv4,
    /// `IPV6`.
    Ipv6,
    /// `UDP`.
    Udp,
    /// `ESP`.
    Esp,
    /// `SECURITY` action.
    Security,
    /// `QUEUE` action.
    Queue,
    /// `PASSTHRU` action.
    Passthru,
    /// A type this crate does not name.
    Other(i32),
}

fn item_part(t: i32) -> FlowPart {
    match t as u32 {
        sys::RTE_FLOW_ITEM_TYPE_ETH => FlowPart::Eth,
        sys::RTE_FLOW_ITEM_TYPE_IPV4 => FlowPart::Ipv4,
        sys::RTE_FLOW_ITEM_TYPE_IPV6 => FlowPart::Ipv6,
        sys::RTE_FLOW_ITEM_TYPE_UDP => FlowPart::Udp,
        sys::RTE_FLOW_ITEM_TYPE_ESP => FlowPart::Esp,
        _ => FlowPart::Other(t),
    }
}

fn action_part(t: i32) -> FlowPart {
    match t as u32 {
        sys::RTE_FLOW_ACTION_TYPE_SECURITY => FlowPart::Security,
        sys::RTE_FLOW_ACTION_TYPE_QUEUE => FlowPart::Queue,
        sys::RTE_FLOW_ACTION_TYPE_PASSTHRU => FlowPart::Passthru,
        _ => FlowPart::Other(t),
    }
}

/// The rule built for an SA, read back from the C structures DPDK would get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFlowView {
    /// Ingress rule (decryption).
    pub ingress: bool,
    /// Egress rule (encryption).
    pub egress: bool,
    /// Pattern items, in order (END excluded).
    pub items: Vec<FlowPart>,
    /// Outer source and destination matched exactly (tunnel mode).
    pub addresses: Option<(IpAddr, IpAddr)>,
    /// UDP destination port matched exactly (NAT-T).
    pub udp_dst: Option<u16>,
    /// SPI matched, and whether all 32 bits are.
    pub spi: u32,
    /// The SPI mask covers all 32 bits.
    pub spi_exact: bool,
    /// Actions, in order (END excluded).
    pub actions: Vec<FlowPart>,
    /// The QUEUE action's queue (0 without one).
    pub queue: u16,
}

impl InlineIpsecSa<'_> {
    /// The flow rule this SA gets with `fate` (ignored for egress), read back
    /// field by field.
    pub fn flow_view(&self, fate: IngressFate) -> Result<InlineFlowView> {
        let raw = self.raw()?;
        let (queue, f) = fate.raw();
        let mut v = sys::ironsa_flow_view::default();
        // SAFETY: raw (with its borrowed key) and v are valid for the call;
        // the shim fills local structures and v only.
        let ret = unsafe { sys::ironsa_security_flow_view(&raw, queue, f, &mut v) };
        if ret != 0 {
            return Err(Error::from_ret("rte_flow rule description", ret));
        }
        let full = |m: &[u8]| m.iter().all(|b| *b == 0xff);
        let n = if v.ipv6 != 0 { 16 } else { 4 };
        let addr = |b: [u8; 16]| {
            if v.ipv6 != 0 {
                IpAddr::from(b)
            } else {
                IpAddr::from([b[0], b[1], b[2], b[3]])
            }
        };
        let addresses = (full(&v.src_mask[..n]) && full(&v.dst_mask[..n])).then(|| (addr(v.src), addr(v.dst)));
        let n_items = usize::try_from(v.n_items).unwrap_or(0).min(v.item_types.len());
        let n_actions = usize::try_from(v.n_actions).unwrap_or(0).min(v.action_types.len());
        Ok(InlineFlowView {
            ingress: v.ingress != 0,
            egress: v.egress != 0,
            items: v.item_types[..n_items].iter().map(|t| item_part(*t)).collect(),
            addresses,
            udp_dst: (v.udp != 0 && v.udp_dst_mask == u16::MAX).then_some(v.udp_dst),
            spi: v.spi,
            spi_exact: v.spi_mask == u32::MAX,
            actions: v.action_types[..n_actions].iter().map(|t| action_part(*t)).collect(),
            queue: v.queue,
        })
    }
}

/// Length of the buffer DPDK's flow error message is copied into.
const FLOW_MSG_LEN: usize = 160;

/// Validates (`create` false) or creates the rule of `sa` for session
/// `sess` on `port`; the error names the port, SPI and DPDK's message.
fn flow_call(
    port: EthPort,
    sa: &InlineIpsecSa<'_>,
    sess: *mut c_void,
    fate: IngressFate,
    create: bool,
) -> Result<*mut c_void> {
    let raw = sa.raw()?;
    let (queue, f) = fate.raw();
    let mut ret = 0i32;
    let mut msg = [0 as c_char; FLOW_MSG_LEN];
    // SAFETY: port id valid (EthPort); raw/key valid for the call; sess is a
    // live session of this port's context or NULL (validation only); msg is
    // writable for its length.
    let flow = unsafe {
        sys::ironsa_security_flow(
            port.id(),
            &raw,
            sess,
            queue,
            f,
            i32::from(create),
            &mut ret,
            msg.as_mut_ptr(),
            msg.len(),
        )
    };
    if ret == 0 {
        return Ok(flow);
    }
    let driver = msg_text(&msg);
    let call = if create { "rte_flow_create" } else { "rte_flow_validate" };
    let code = -ret;
    let text = format!(
        "{call} on port {} for SPI {:#x} ({}, {fate:?}): {driver} (errno {code}: {})",
        port.id(),
        sa.spi,
        if sa.egress { "egress" } else { "ingress" },
        crate::error::strerror(code)
    );
    // ENOSYS: no flow API; ENOTSUP: not this rule.
    Err(if matches!(code, libc::ENOSYS | libc::ENOTSUP) {
        Error::Unsupported(text)
    } else {
        Error::Dpdk {
            call,
            code,
            message: text,
        }
    })
}

fn msg_text(msg: &[c_char]) -> String {
    let bytes: Vec<u8> = msg.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl EthPort {
    /// Which ingress fate this port accepts for the rule `sa` would get (no
    /// session: `rte_flow_validate` with an empty `SECURITY` action, so a
    /// driver may refuse it for that alone). Errors say why none is accepted.
    pub fn validate_inline_flow(&self, sa: &InlineIpsecSa<'_>, rx_queue: u16) -> Result<IngressFate> {
        first_accepted(*self, sa, std::ptr::null_mut(), rx_queue)
    }
}

/// The first fate `port` validates for `sa`, or the error of the most
/// specific fate when it validates none.
fn first_accepted(port: EthPort, sa: &InlineIpsecSa<'_>, sess: *mut c_void, rx_queue: u16) -> Result<IngressFate> {
    let fates: &[IngressFate] = if sa.egress {
        &[IngressFate::Unspecified]
    } else {
        &IngressFate::candidates(rx_queue)
    };
    let mut first_err: Option<Error> = None;
    for fate in fates {
        match flow_call(port, sa, sess, *fate, false) {
            Ok(_) => return Ok(*fate),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| Error::Unsupported("no flow fate to try".into())))
}

/// An installed flow rule (destroyed on drop).
#[derive(Debug)]
pub struct SecurityFlow {
    port: EthPort,
    ptr: NonNull<c_void>,
    fate: IngressFate,
}

// SAFETY: a flow handle is only passed back to rte_flow_destroy, which DPDK
// allows from any thread (control path); it is destroyed once, on drop.
unsafe impl Send for SecurityFlow {}
// SAFETY: see Send; no method reads through the pointer.
unsafe impl Sync for SecurityFlow {}

impl SecurityFlow {
    /// The fate the driver accepted (ingress; `Unspecified` for egress).
    pub fn fate(&self) -> IngressFate {
        self.fate
    }

    /// The port the rule is on.
    pub fn port(&self) -> EthPort {
        self.port
    }
}

impl Drop for SecurityFlow {
    fn drop(&mut self) {
        let mut msg = [0 as c_char; FLOW_MSG_LEN];
        // SAFETY: ptr came from rte_flow_create on this port and is destroyed once.
        let ret = unsafe { sys::ironsa_flow_destroy(self.port.id(), self.ptr.as_ptr(), msg.as_mut_ptr(), msg.len()) };
        if ret != 0 {
            // Nothing to return to: a leaked rule on a port being torn down.
            eprintln!(
                "rte_flow_destroy on port {}: {} ({ret})",
                self.port.id(),
                msg_text(&msg)
            );
        }
    }
}

impl InlineSession {
    /// Installs the rule that hands `sa`'s ESP (the SA this session was
    /// created for) to the session on its port: ingress rules deliver to
    /// `rx_queue` when the driver allows, otherwise the first fate it accepts.
    pub fn install_flow(&self, sa: &InlineIpsecSa<'_>, rx_queue: u16) -> Result<SecurityFlow> {
        if sa.egress != self.is_egress() {
            return Err(Error::InvalidArgument(format!(
                "flow for SPI {:#x}: direction differs from the session's",
                sa.spi
            )));
        }
        let port = self.port();
        let fate = first_accepted(port, sa, self.as_ptr(), rx_queue)?;
        let ptr = flow_call(port, sa, self.as_ptr(), fate, true)?;
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::from_errno("rte_flow_create"))?;
        Ok(SecurityFlow { port, ptr, fate })
    }
}
