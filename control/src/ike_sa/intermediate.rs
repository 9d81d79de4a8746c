//! The IKE_INTERMEDIATE exchange (RFC 9242) carrying the additional key
//! exchanges of RFC 9370: one exchange per negotiated ADDKE transform, in
//! order, each protected with the keys of the one before and followed by a
//! re-derivation of every key (RFC 9370 §2.2.2). The AUTH payloads of
//! IKE_AUTH then bind all of them (IntAuth, RFC 9242 §3.3.2).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::handshake::install_keys;
use super::{DownReason, IkeSa, RequestKind, Role, State, notify};
use crate::Error;
use crate::crypto::keys::derive_rekeyed_ike_sa_keys;
use crate::crypto::{CryptoError, KeGroup, KeyExchange};
use crate::wire::ikev2::{self, ExchangeType, Header, NotifyType, Payload, PayloadType};

/// Initiator: the additional key exchange in flight.
pub(crate) struct Pending {
    /// ADDKE transform number (1..=7).
    number: u8,
    ke: KeyExchange,
}

/// The running IntAuth_i and IntAuth_r values (RFC 9242 §3.3.2), empty
/// before the first IKE_INTERMEDIATE exchange.
#[derive(Default)]
pub(crate) struct IntAuth {
    initiator: Vec<u8>,
    responder: Vec<u8>,
}

impl IntAuth {
    /// IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, or nothing when no
    /// IKE_INTERMEDIATE exchange took place (the AUTH is then RFC 7296's).
    pub(crate) fn octets(&self, ike_auth_mid: u32) -> Vec<u8> {
        if self.initiator.is_empty() {
            return Vec::new();
        }
        [&self.initiator[..], &self.responder[..], &ike_auth_mid.to_be_bytes()].concat()
    }

    /// Folds one IKE_INTERMEDIATE message into the chain of its sender:
    /// IntAuth_xN = prf(SK_px, IntAuth_x(N-1) | IntAuth_xN_A | IntAuth_xN_P).
    fn absorb(&mut self, sa: &IkeSa, header: &Header, inner: &[Payload]) -> Result<(), Error> {
        let keys = sa.keys.as_ref().ok_or_else(|| Error::InvalidSyntax("no keys".into()))?;
        let from_initiator = header.is_initiator();
        let (chain, sk_p) = if from_initiator {
            (&mut self.initiator, keys.sk_pi())
        } else {
            (&mut self.responder, keys.sk_pr())
        };
        let data = authenticated_part(header, inner)?;
        *chain = keys.suite.prf.prf(sk_p, &[chain, &data]).to_vec();
        Ok(())
    }
}

/// IntAuth_A | IntAuth_P of an IKE_INTERMEDIATE message: the IKE header and
/// the Encrypted payload's header, with lengths as if the message carried
/// neither IV, padding nor ICV, then the plaintext inner payloads. A
/// fragmented message counts as the unfragmented one (RFC 9242 §3.3.2), so
/// it is built from the decrypted payloads rather than from datagrams;
/// IKE_INTERMEDIATE carries no unencrypted payloads.
fn authenticated_part(header: &Header, inner: &[Payload]) -> Result<Vec<u8>, Error> {
    let mut plain = Vec::new();
    let first = ikev2::try_encode_payloads(inner, &mut plain)?;
    let sk_len = 4 + plain.len();
    let sk_len16 = u16::try_from(sk_len).map_err(|_| Error::InvalidSyntax("IKE_INTERMEDIATE too large".into()))?;
    let mut out = ikev2::encode_message(header, &[]);
    let total = u32::try_from(out.len() + sk_len).map_err(|_| Error::InvalidSyntax("message too large".into()))?;
    out[16] = PayloadType::SK.0;
    out[24..28].copy_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[first.0, 0]);
    out.extend_from_slice(&sk_len16.to_be_bytes());
    out.extend_from_slice(&plain);
    Ok(out)
}

/// Initiator, once IKE_SA_INIT (or an IKE_INTERMEDIATE) completed: runs the
/// next additional key exchange, or IKE_AUTH when none is left.
pub(crate) fn next(sa: &mut IkeSa, now: Instant) {
    let State::Authenticating(ctx) = &mut sa.state else {
        return;
    };
    let Some((number, group)) = ctx.additional_ke.first().copied() else {
        super::auth::start(sa, now);
        return;
    };
    ctx.additional_ke.remove(0);
    let ke = match KeyExchange::generate(&*sa.ctx.crypto, group) {
        Ok(ke) => ke,
        Err(e) => {
            warn!(connection = %sa.config.name, "cannot start additional key exchange ke{number}_{}: {e}", group.name());
            sa.close(DownReason::Failed(e.to_string()));
            return;
        }
    };
    let payloads = vec![Payload::Ke {
        group: group.number(),
        data: ke.public_value().to_vec(),
    }];
    let header = sa.header(ExchangeType::IKE_INTERMEDIATE, sa.next_request_id, false);
    if let Err(e) = absorb(sa, &header, &payloads) {
        sa.close(DownReason::Failed(e.to_string()));
        return;
    }
    debug!(peer = %sa.remote, "IKE_INTERMEDIATE: sending key share of ke{number}_{}", group.name());
    sa.send_request(
        now,
        ExchangeType::IKE_INTERMEDIATE,
        payloads,
        RequestKind::Intermediate(Pending { number, ke }),
    );
}

fn absorb(sa: &mut IkeSa, header: &Header, inner: &[Payload]) -> Result<(), Error> {
    let mut int_auth = match &mut sa.state {
        State::Authenticating(ctx) => std::mem::take(&mut ctx.int_auth),
        _ => return Err(Error::InvalidSyntax("not authenticating".into())),
    };
    let r = int_auth.absorb(sa, header, inner);
    if let State::Authenticating(ctx) = &mut sa.state {
        ctx.int_auth = int_auth;
    }
    r
}

/// The KE payload of additional exchange `group` among `inner`.
fn key_share(inner: &[Payload], number: u8, group: KeGroup) -> Result<&[u8], String> {
    match inner.iter().find_map(|p| match p {
        Payload::Ke { group, data } => Some((*group, data)),
        _ => None,
    }) {
        Some((g, data)) if g == group.number() => Ok(data),
        Some((g, _)) => Err(format!(
            "IKE_INTERMEDIATE for ke{number}_{} carries a KE payload of group {g}",
            group.name()
        )),
        None => Err(format!(
            "IKE_INTERMEDIATE for ke{number}_{} carries no KE payload",
            group.name()
        )),
    }
}

/// SKEYSEED = prf(SK_d(n-1), SK(n) | Ni | Nr) and every key re-derived from it.
fn rekey(sa: &mut IkeSa, number: u8, group: KeGroup, shared: &[u8]) -> Result<(), Error> {
    let State::Authenticating(ctx) = &sa.state else {
        return Err(Error::InvalidSyntax("not authenticating".into()));
    };
    let keys = sa.keys.as_ref().ok_or_else(|| Error::InvalidSyntax("no keys".into()))?;
    let suite = keys.suite;
    let new = derive_rekeyed_ike_sa_keys(
        &suite, suite.prf, &keys.sk_d, shared, &ctx.ni, &ctx.nr, sa.spi_i, sa.spi_r,
    );
    let mut done = keys.additional_ke;
    if let Some(slot) = done.get_mut(usize::from(number).wrapping_sub(1)) {
        *slot = Some(group);
    }
    install_keys(sa, suite, new)?;
    if let Some(k) = sa.keys.as_mut() {
        k.additional_ke = done;
    }
    Ok(())
}

/// Initiator: the responder's answer to an additional key exchange.
pub(crate) fn handle_response(sa: &mut IkeSa, now: Instant, header: &Header, inner: Vec<Payload>, pending: Pending) {
    let Pending { number, ke } = pending;
    let group = ke.group();
    let result = (|| -> Result<(), String> {
        if let Some(n) = super::error_notify(&inner) {
            return Err(format!("peer answered {}", n.ty));
        }
        let ker = key_share(&inner, number, group)?;
        absorb(sa, header, &inner).map_err(|e| e.to_string())?;
        let shared = ke.finish(ker).map_err(|e| e.to_string())?;
        rekey(sa, number, group, &shared).map_err(|e| e.to_string())
    })();
    match result {
        Ok(()) => {
            info!(connection = %sa.config.name, peer = %sa.remote, "additional key exchange ke{number}_{} done, IKE SA keys updated", group.name());
            next(sa, now);
        }
        Err(why) => {
            warn!(connection = %sa.config.name, peer = %sa.remote, "IKE_INTERMEDIATE failed: {why}");
            sa.close(DownReason::Failed(why));
        }
    }
}

/// Answers IKE_INTERMEDIATE request `mid` with INVALID_SYNTAX.
fn refuse(sa: &mut IkeSa, mid: u32) {
    sa.send_response(
        ExchangeType::IKE_INTERMEDIATE,
        mid,
        vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())],
    );
}

/// True if the initiator's IKE_SA_INIT announced IKE_INTERMEDIATE support.
fn peer_announced_intermediate(sa: &IkeSa) -> bool {
    let State::Authenticating(ctx) = &sa.state else {
        return false;
    };
    ikev2::decode_message(&ctx.peer_init)
        .is_ok_and(|m| super::find_notify(&m.payloads, NotifyType::INTERMEDIATE_EXCHANGE_SUPPORTED).is_some())
}

/// Responder: an IKE_INTERMEDIATE request when no additional key exchange
/// is left (or none was negotiated). RFC 9242 lets an initiator that
/// announced support send such exchanges for other purposes: it gets an
/// empty answer, and both messages count in IntAuth like any other. A key
/// share here is a protocol error that ends the handshake: an IKE_AUTH
/// after a refused IKE_INTERMEDIATE would be bound to none of it.
fn answer_without_key_exchange(sa: &mut IkeSa, header: &Header, mid: u32, inner: &[Payload]) {
    let why = if !peer_announced_intermediate(sa) {
        Some("IKE_INTERMEDIATE from a peer that did not announce INTERMEDIATE_EXCHANGE_SUPPORTED")
    } else if inner.iter().any(|p| matches!(p, Payload::Ke { .. })) {
        Some("IKE_INTERMEDIATE with a KE payload but no additional key exchange left to run")
    } else {
        None
    };
    if let Some(why) = why {
        warn!(connection = %sa.config.name, peer = %sa.remote, "{why}: refused");
        refuse(sa, mid);
        sa.close(DownReason::Failed(why.into()));
        return;
    }
    let response_header = sa.header(ExchangeType::IKE_INTERMEDIATE, mid, true);
    let result = absorb(sa, header, inner).and_then(|()| absorb(sa, &response_header, &[]));
    if let Err(e) = result {
        sa.close(DownReason::Failed(e.to_string()));
        return;
    }
    debug!(peer = %sa.remote, payloads = inner.len(), "IKE_INTERMEDIATE without a key exchange: answered empty");
    sa.send_response(ExchangeType::IKE_INTERMEDIATE, mid, Vec::new());
}

/// Responder: an IKE_INTERMEDIATE request with the initiator's key share.
pub(crate) fn handle_request(sa: &mut IkeSa, header: &Header, mid: u32, inner: Vec<Payload>) {
    debug_assert_eq!(sa.role, Role::Responder);
    let State::Authenticating(ctx) = &mut sa.state else {
        return;
    };
    let Some((number, group)) = ctx.additional_ke.first().copied() else {
        return answer_without_key_exchange(sa, header, mid, &inner);
    };
    let kei = match key_share(&inner, number, group) {
        Ok(k) => k,
        Err(why) => {
            warn!(connection = %sa.config.name, peer = %sa.remote, "{why}");
            refuse(sa, mid);
            sa.close(DownReason::Failed(why));
            return;
        }
    };
    let (ker, shared) = match KeyExchange::respond(&*sa.ctx.crypto, group, kei) {
        Ok(x) => x,
        Err(e) => {
            warn!(connection = %sa.config.name, peer = %sa.remote, "additional key exchange ke{number}_{}: {e}", group.name());
            if matches!(e, CryptoError::InvalidPublicValue(_)) {
                refuse(sa, mid);
            }
            sa.close(DownReason::Failed(e.to_string()));
            return;
        }
    };
    if let State::Authenticating(ctx) = &mut sa.state {
        ctx.additional_ke.remove(0);
    }
    let payloads = vec![Payload::Ke {
        group: group.number(),
        data: ker,
    }];
    let response_header = sa.header(ExchangeType::IKE_INTERMEDIATE, mid, true);
    let result = absorb(sa, header, &inner).and_then(|()| absorb(sa, &response_header, &payloads));
    if let Err(e) = result {
        sa.close(DownReason::Failed(e.to_string()));
        return;
    }
    // The response goes out under the keys the request came with.
    sa.send_response(ExchangeType::IKE_INTERMEDIATE, mid, payloads);
    match rekey(sa, number, group, &shared) {
        Ok(()) => {
            info!(connection = %sa.config.name, peer = %sa.remote, "additional key exchange ke{number}_{} done, IKE SA keys updated", group.name())
        }
        Err(e) => sa.close(DownReason::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_part_has_lengths_without_iv_padding_and_icv() {
        let header = Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0x1112_1314_1516_1718,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange: ExchangeType::IKE_INTERMEDIATE,
            flags: ikev2::FLAG_INITIATOR,
            message_id: 1,
            length: 0,
        };
        let inner = vec![Payload::Ke {
            group: KeGroup::MlKem768.number(),
            data: vec![0xab; 1184],
        }];
        let part = authenticated_part(&header, &inner).unwrap();
        // IKE header (28) | SK header (4) | KE payload (4 + 4 + 1184).
        assert_eq!(part.len(), 28 + 4 + 8 + 1184);
        assert_eq!(part[16], PayloadType::SK.0, "IKE header names the Encrypted payload");
        assert_eq!(
            u32::from_be_bytes([part[24], part[25], part[26], part[27]]) as usize,
            part.len()
        );
        assert_eq!(part[28], PayloadType::KE.0, "SK header names the first inner payload");
        assert_eq!(part[29], 0, "critical bit and reserved bits zero");
        assert_eq!(u16::from_be_bytes([part[30], part[31]]) as usize, 4 + 8 + 1184);
        assert_eq!(
            part[32],
            PayloadType::NONE.0,
            "the KE payload is the last inner payload"
        );
        assert_eq!(u16::from_be_bytes([part[34], part[35]]) as usize, 8 + 1184);
        assert_eq!(u16::from_be_bytes([part[36], part[37]]), 36, "KE payload's method");
    }
}
