//! The INFORMATIONAL exchange (RFC 7296 §1.4): DELETE of CHILD_SAs and of
//! the IKE SA, liveness checks (DPD), and error notifications.

use std::time::Instant;

use tracing::{debug, info};

use super::child::ChildState;
use super::{DownReason, Event, IkeSa, RequestKind};
use crate::wire::ikev2::{Delete, ExchangeType, Payload, ProtocolId};

/// An outstanding INFORMATIONAL request.
pub(crate) enum Pending {
    /// Liveness check.
    Dpd,
    /// DELETE of children (our inbound SPIs).
    DeleteChildren(Vec<u32>),
    /// DELETE of the IKE SA.
    DeleteIke,
    /// MOBIKE: our UPDATE_SA_ADDRESSES, with the COOKIE2 the answer must
    /// echo (the peer's return routability, RFC 4555 §3.5).
    UpdateSaAddresses {
        /// The COOKIE2 sent.
        cookie: Box<[u8]>,
    },
    /// MOBIKE: our list of additional addresses (RFC 4555 §3.6).
    AnnounceAddresses,
    /// MOBIKE: our return routability check of the peer at `remote`.
    ReturnRoutability {
        /// The COOKIE2 the answer must echo.
        cookie: Box<[u8]>,
        /// The address checked.
        remote: std::net::SocketAddr,
    },
}

/// Sends an empty INFORMATIONAL request (dead-peer detection).
pub(crate) fn start_dpd(sa: &mut IkeSa, now: Instant) {
    debug!(peer = %sa.remote, "liveness check");
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        Vec::new(),
        RequestKind::Informational(Pending::Dpd),
    );
}

/// Sends a DELETE for the child with inbound SPI `spi_in`.
pub(crate) fn start_delete_child(sa: &mut IkeSa, now: Instant, spi_in: u32) {
    let Some(c) = sa.children.iter_mut().find(|c| c.spi_in == spi_in) else {
        return;
    };
    c.state = ChildState::Deleting;
    let payloads = vec![Payload::Delete(Delete {
        protocol: ProtocolId::ESP,
        spi_size: 4,
        spis: vec![spi_in.to_be_bytes().to_vec()],
    })];
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        payloads,
        RequestKind::Informational(Pending::DeleteChildren(vec![spi_in])),
    );
}

/// Sends a DELETE for the IKE SA.
pub(crate) fn start_delete_ike(sa: &mut IkeSa, now: Instant) {
    let payloads = vec![Payload::Delete(Delete {
        protocol: ProtocolId::IKE,
        spi_size: 0,
        spis: Vec::new(),
    })];
    sa.send_request(
        now,
        ExchangeType::INFORMATIONAL,
        payloads,
        RequestKind::Informational(Pending::DeleteIke),
    );
}

/// Removes a child and reports it.
pub(crate) fn remove_child(sa: &mut IkeSa, spi_in: u32) {
    if let Some(pos) = sa.children.iter().position(|c| c.spi_in == spi_in) {
        let c = sa.children.remove(pos);
        sa.ctx.child_spis.release(c.spi_in);
        info!(
            connection = %sa.config.name,
            child = %sa.child_name(&c),
            spi_in = format_args!("{:08x}", c.spi_in),
            spi_out = format_args!("{:08x}", c.spi_out),
            "CHILD_SA deleted"
        );
        sa.push_event(Event::ChildSaDeleted {
            spi_in: c.spi_in,
            spi_out: c.spi_out,
        });
    }
}

fn close_ike(sa: &mut IkeSa) {
    let reason = if sa.replaced {
        DownReason::Rekeyed
    } else {
        DownReason::Deleted
    };
    sa.close(reason);
}

/// Processes the response to our INFORMATIONAL request.
pub(crate) fn handle_response(sa: &mut IkeSa, _now: Instant, inner: Vec<Payload>, pending: Pending) {
    match pending {
        Pending::UpdateSaAddresses { cookie } => super::mobike::handle_update_response(sa, &inner, &cookie),
        Pending::AnnounceAddresses => debug!(peer = %sa.remote, "peer took our address list (MOBIKE)"),
        Pending::ReturnRoutability { cookie, remote } => {
            super::mobike::handle_return_routability(sa, &inner, &cookie, remote)
        }
        Pending::Dpd => debug!(peer = %sa.remote, "peer is alive"),
        Pending::DeleteChildren(spis) => {
            for spi in spis {
                remove_child(sa, spi);
            }
        }
        Pending::DeleteIke => {
            let what = if sa.replaced {
                "old IKE SA retired after its rekey"
            } else {
                "IKE SA deleted"
            };
            info!(connection = %sa.config.name, peer = %sa.remote, spi_i = %spi(sa.spi_i), spi_r = %spi(sa.spi_r), "{what}");
            close_ike(sa);
        }
    }
}

/// Processes an INFORMATIONAL request from the peer.
pub(crate) fn handle_request(
    sa: &mut IkeSa,
    _now: Instant,
    mid: u32,
    inner: Vec<Payload>,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) {
    let mut response = super::mobike::handle_request(sa, local, remote, &inner);
    let mut delete_ike = false;
    let mut ours = Vec::new();
    for p in &inner {
        match p {
            Payload::Delete(d) if d.protocol == ProtocolId::IKE => delete_ike = true,
            Payload::Delete(d) if d.protocol == ProtocolId::ESP || d.protocol == ProtocolId::AH => {
                for spi in &d.spis {
                    let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes) else {
                        continue;
                    };
                    if let Some(c) = sa.children.iter().find(|c| c.spi_out == spi) {
                        // A child we are deleting ourselves is not listed again (§1.4.1).
                        if c.state != ChildState::Deleting {
                            ours.push(c.spi_in);
                        }
                        let spi_in = c.spi_in;
                        remove_child(sa, spi_in);
                    }
                }
            }
            Payload::Notify(n) if super::mobike::NOTIFIES.contains(&n.ty) => {}
            Payload::Notify(n) => {
                info!(peer = %sa.remote, notify = %n.ty, "peer notification");
            }
            _ => {}
        }
    }
    if delete_ike {
        let what = if sa.replaced {
            "peer retired the old IKE SA after its rekey"
        } else {
            "peer deleted the IKE SA"
        };
        info!(connection = %sa.config.name, peer = %sa.remote, spi_i = %spi(sa.spi_i), spi_r = %spi(sa.spi_r), "{what}");
        sa.send_response(ExchangeType::INFORMATIONAL, mid, Vec::new());
        close_ike(sa);
        return;
    }
    if !ours.is_empty() {
        response.push(Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: ours.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        }));
    }
    sa.send_response(ExchangeType::INFORMATIONAL, mid, response);
}

/// An IKE SPI as logs and `ironsa sas` show it.
fn spi(v: u64) -> String {
    format!("{v:016x}")
}
