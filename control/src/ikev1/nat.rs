//! NAT traversal for IKEv1 (RFC 3947): the vendor ID that announces it,
//! NAT-D hashes in Main Mode messages 3 and 4, the move of both ends to
//! the NAT-T port once a NAT is seen, and the UDP-encapsulated ESP modes
//! Quick Mode then asks for (RFC 3948 carries the ESP).

use std::net::{IpAddr, SocketAddr};

use tracing::info;

use super::{Ikev1Error, Ikev1Sa, invalid};
use crate::wire::isakmp::{self, Payload};

/// Vendor ID of RFC 3947 (MD5 of "RFC 3947").
pub const RFC3947_VENDOR_ID: [u8; 16] = [
    0x4a, 0x13, 0x1c, 0x81, 0x07, 0x03, 0x58, 0x45, 0x5c, 0x57, 0x28, 0xf2, 0x0e, 0x95, 0x45, 0x2f,
];

/// Whether a message announces RFC 3947 NAT traversal.
pub(super) fn announces_nat_t(payloads: &[Payload<'_>]) -> bool {
    payloads
        .iter()
        .any(|p| matches!(p, Payload::VendorId(v) if *v == RFC3947_VENDOR_ID))
}

fn address_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Where an SA sent before a peer's move, to undo it.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddresses {
    local: SocketAddr,
    remote: SocketAddr,
    floated: bool,
}

impl Ikev1Sa {
    /// HASH(CKY-I | CKY-R | IP | port) of one end, with the Phase 1 hash.
    fn nat_d_hash(&self, addr: SocketAddr) -> Result<Vec<u8>, Ikev1Error> {
        let hash = self.suite.map(|s| s.hash).ok_or_else(|| invalid("no suite"))?;
        Ok(hash.hash(&[
            &self.cookie_i.to_be_bytes(),
            &self.cookie_r.to_be_bytes(),
            &address_bytes(addr.ip()),
            &addr.port().to_be_bytes(),
        ]))
    }

    /// Our two NAT-D payload bodies for Main Mode message 3 or 4: the peer's
    /// address as we send to it, then ours. With `force_udp_encap` ours is
    /// made not to match, so both ends see a NAT and encapsulate.
    pub(super) fn our_nat_d(&self) -> Result<Option<[Vec<u8>; 2]>, Ikev1Error> {
        if !self.nat_t {
            return Ok(None);
        }
        let mut ours = self.local;
        if self.conn.force_udp_encap {
            ours.set_port(!ours.port());
        }
        Ok(Some([self.nat_d_hash(self.remote)?, self.nat_d_hash(ours)?]))
    }

    /// Reads the peer's NAT-D payloads of Main Mode message 3 or 4: the
    /// first is our address as it sent to us, the others its own.
    pub(super) fn check_nat_d(&mut self, datagram: &[u8]) -> Result<(), Ikev1Error> {
        if !self.nat_t {
            return Ok(());
        }
        self.check_nat_d_payloads(&isakmp::decode_message(datagram)?.payloads)
    }

    /// [`Ikev1Sa::check_nat_d`] on decoded (possibly decrypted) payloads.
    pub(super) fn check_nat_d_payloads(&mut self, payloads: &[Payload<'_>]) -> Result<(), Ikev1Error> {
        if !self.nat_t {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = payloads
            .iter()
            .filter_map(|p| match p {
                Payload::NatD(d) => Some(*d),
                _ => None,
            })
            .collect();
        let [first, rest @ ..] = hashes.as_slice() else {
            // A peer that announced NAT-T but sends no NAT-D: no NAT known.
            return Ok(());
        };
        if rest.is_empty() {
            return Err(invalid("one NAT-D payload: the peer's own address is missing"));
        }
        let ours = self.nat_d_hash(self.local)?;
        let theirs = self.nat_d_hash(self.remote)?;
        // A forced encapsulation counts as a NAT in front of us: the peer
        // sees one through our NAT-D, and we float as if there were one.
        self.nat_here = first != &ours.as_slice() || self.conn.force_udp_encap;
        self.nat_there = !rest.contains(&theirs.as_slice());
        if self.behind_nat() {
            info!(
                connection = %self.conn.name,
                peer = %self.remote,
                "IKEv1 NAT detected ({}{}): IKE and ESP move to UDP {}",
                if self.nat_here { "in front of us" } else { "" },
                if self.nat_there {
                    if self.nat_here { ", and in front of the peer" } else { "in front of the peer" }
                } else {
                    ""
                },
                self.ctx.local_nat_port
            );
        }
        Ok(())
    }

    /// True once a NAT was seen between the two ends (ESP is then
    /// UDP-encapsulated).
    pub fn behind_nat(&self) -> bool {
        self.nat_here || self.nat_there
    }

    /// Initiator after Main Mode message 4: with a NAT in the path, the
    /// rest goes between the NAT-T ports, each datagram with the non-ESP
    /// marker (RFC 3947 §4).
    pub(super) fn float_to_nat_port(&mut self) {
        if !self.behind_nat() || self.floated {
            return;
        }
        self.local.set_port(self.ctx.local_nat_port);
        self.remote
            .set_port(self.conn.remote_nat_port.unwrap_or(self.ctx.remote_nat_port));
        self.floated = true;
    }

    /// The driver received an encrypted message of this SA on `local` from
    /// `remote`: once NAT-T is negotiated, the peer may have moved to the
    /// NAT-T port (or its NAT to another mapping), and we answer where it
    /// sends from. Returns the previous addresses for
    /// [`Ikev1Sa::undo_peer_move`], should the message not authenticate.
    pub fn peer_sent_from(&mut self, local: SocketAddr, remote: SocketAddr) -> Option<PeerAddresses> {
        if !self.nat_t || (local == self.local && remote == self.remote) {
            return None;
        }
        let before = PeerAddresses {
            local: self.local,
            remote: self.remote,
            floated: self.floated,
        };
        self.floated |= local.port() == self.ctx.local_nat_port;
        self.local = local;
        self.remote = remote;
        Some(before)
    }

    /// Goes back to the addresses before [`Ikev1Sa::peer_sent_from`].
    pub fn undo_peer_move(&mut self, before: PeerAddresses) {
        self.local = before.local;
        self.remote = before.remote;
        self.floated = before.floated;
    }

    /// Logs a move [`Ikev1Sa::peer_sent_from`] made and the message confirmed.
    pub fn confirm_peer_move(&self, before: &PeerAddresses) {
        info!(
            connection = %self.conn.name,
            "IKEv1 peer moved from {} to {} (NAT traversal)",
            before.remote,
            self.remote
        );
    }
}
