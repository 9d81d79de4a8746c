//! The gateway's side of the "Cisco IPsec" remote-access profile: XAUTH
//! (draft-beaulieu-ike-xauth-02) after Main Mode, then Mode Config
//! (draft-dukes-ike-mode-cfg-02) in transaction exchanges.
//!
//! ```text
//! Gateway (responder of Main Mode)        Client
//! HDR*, HASH, ATTR(REQUEST: USER_NAME, USER_PASSWORD)  -->
//!                     <--  HDR*, HASH, ATTR(REPLY: USER_NAME=.., USER_PASSWORD=..)
//! HDR*, HASH, ATTR(SET: STATUS=OK|FAIL)                -->
//!                     <--  HDR*, HASH, ATTR(ACK: STATUS)
//!                     <--  HDR*, HASH, ATTR(REQUEST: INTERNAL_IP4_ADDRESS, ..)
//! HDR*, HASH, ATTR(REPLY: INTERNAL_IP4_ADDRESS=.., DNS ..)  -->
//! ```
//! Passwords are checked against the context's local users; the virtual
//! IP comes from the connection's pools, leased to the XAUTH user name.
//! Until XAUTH succeeded the SA takes neither Mode Config nor Quick Mode.

use std::fmt;
use std::time::Instant;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tracing::{debug, info, warn};

use super::{Flight, Ikev1Error, Ikev1Sa, hashed_payloads, invalid};
use crate::config::display_identity;
use crate::crypto::random_u32;
use crate::eap::Credential;
use crate::ike_sa::DownReason;
use crate::ike_sa::config_payload::{address_attribute, requested_families, server_attributes};
use crate::wire::ikev2::ConfigAttribute;
use crate::wire::isakmp::{Attribute, AttributeValue, ConfigAttributes, ConfigType, ExchangeType, Header, Payload};

/// XAUTH attribute types (draft-beaulieu-ike-xauth-02 §6).
mod attr {
    pub const USER_NAME: u16 = 16521;
    pub const USER_PASSWORD: u16 = 16522;
    pub const STATUS: u16 = 16527;
}

/// XAUTH_STATUS values.
const STATUS_FAIL: u16 = 0;
const STATUS_OK: u16 = 1;

/// Where the gateway's XAUTH exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XauthState {
    /// Our request for username and password is sent.
    RequestSent,
    /// The outcome (XAUTH_STATUS) is sent; waiting for the client's ACK.
    StatusSent,
    /// The client passed: Mode Config and Quick Mode may follow.
    Done,
}

impl fmt::Display for XauthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XauthState::RequestSent => "XAUTH_REQ_SENT",
            XauthState::StatusSent => "XAUTH_STATUS_SENT",
            XauthState::Done => "XAUTH_DONE",
        })
    }
}

/// The gateway's XAUTH exchange and its Mode Config answers.
pub(super) struct XauthServer {
    pub(super) state: XauthState,
    /// The message ID of our current request (REQUEST, then SET).
    message_id: u32,
    identifier: u16,
    pub(super) flight: Flight,
    /// The user name the client gave.
    user: Option<String>,
    /// Why the credentials were refused (sent STATUS=FAIL).
    refused: Option<String>,
    /// The last Mode Config exchange: its message ID and datagrams (a
    /// pushed SET waits for its ACK on the flight's timer).
    pub(super) config: Option<(u32, Flight)>,
}

impl XauthServer {
    /// A server where XAUTH has nothing (more) to do: Mode Config only.
    fn mode_config_only() -> Self {
        XauthServer {
            state: XauthState::Done,
            message_id: 0,
            identifier: 0,
            flight: Flight::default(),
            user: None,
            refused: None,
            config: None,
        }
    }
}

fn variable<'a>(attributes: &[Attribute<'a>], ty: u16) -> Option<&'a [u8]> {
    attributes.iter().find_map(|a| match a.value {
        AttributeValue::Variable(v) if a.ty == ty => Some(v),
        _ => None,
    })
}

/// Whether a transaction message is the last of its exchange (a reply or
/// an acknowledgement).
fn a_ends_exchange(payloads: &[Payload<'_>]) -> bool {
    payloads
        .iter()
        .any(|p| matches!(p, Payload::Attributes(a) if matches!(a.ty, ConfigType::REPLY | ConfigType::ACK)))
}

impl Ikev1Sa {
    /// The XAUTH state of a gateway SA whose connection requires it.
    pub fn xauth_state(&self) -> Option<XauthState> {
        self.xauth.as_ref().filter(|_| self.conn.xauth).map(|x| x.state)
    }

    /// The user name XAUTH authenticated.
    pub fn xauth_user(&self) -> Option<&str> {
        self.xauth
            .as_ref()
            .filter(|x| x.state == XauthState::Done)
            .and_then(|x| x.user.as_deref())
    }

    /// The virtual IPs Mode Config leased to the peer.
    pub fn remote_virtual_ips(&self) -> &[std::net::IpAddr] {
        &self.virtual_ips
    }

    /// Gateway, once Main Mode is done: asks the client for its username
    /// and password.
    pub(super) fn start_xauth(&mut self, now: Instant) {
        if let Err(e) = self.send_xauth_request(now) {
            self.fail(format!("XAUTH request not sent: {e}"));
        }
    }

    fn send_xauth_request(&mut self, now: Instant) -> Result<(), Ikev1Error> {
        if self.ctx.eap_users.is_none() {
            return Err(invalid("XAUTH needs the local users, and none are configured"));
        }
        let mid = self.new_message_id()?;
        let identifier = random_u32(&*self.ctx.crypto)? as u16;
        let request = Payload::Attributes(ConfigAttributes {
            ty: ConfigType::REQUEST,
            identifier,
            attributes: vec![
                Attribute::variable(attr::USER_NAME, &[]),
                Attribute::variable(attr::USER_PASSWORD, &[]),
            ],
        });
        let out = self.seal_hashed(ExchangeType::TRANSACTION, mid, &[request])?;
        let mut flight = Flight::default();
        flight.sent(&out, now, &self.conn, true);
        self.push_transmit(out);
        info!(connection = %self.conn.name, peer = %self.remote, "IKEv1 XAUTH: asking the client for its username and password");
        self.xauth = Some(Box::new(XauthServer {
            state: XauthState::RequestSent,
            message_id: mid,
            identifier,
            flight,
            user: None,
            refused: None,
            config: None,
        }));
        Ok(())
    }

    /// A transaction exchange message: the client's XAUTH answers, or its
    /// Mode Config request.
    pub(super) fn transaction(&mut self, now: Instant, h: &Header, datagram: &[u8]) -> Result<(), Ikev1Error> {
        if self.role == crate::ike_sa::Role::Initiator && self.conn.xauth_client.is_some() {
            let mut plain = std::mem::take(&mut self.plain);
            let result = self.xauth_client_open(now, h, datagram, &mut plain);
            self.plain = plain;
            return result;
        }
        if self.xauth.is_none() && !self.conn.xauth && !self.conn.virtual_ips.pools.is_empty() {
            self.xauth = Some(Box::new(XauthServer::mode_config_only()));
        }
        let Some(x) = self.xauth.as_ref() else {
            return Err(invalid("transaction exchange on a connection without XAUTH or pools"));
        };
        if x.flight.is_repeat(datagram) {
            if let Some(again) = x.flight.answer_to_repeat() {
                self.push_transmit(again);
            }
            return Ok(());
        }
        if let Some((_, f)) = x.config.as_ref().filter(|(_, f)| f.is_repeat(datagram)) {
            if let Some(again) = f.answer_to_repeat() {
                self.push_transmit(again);
            }
            return Ok(());
        }
        let mut plain = std::mem::take(&mut self.plain);
        let result = self.transaction_open(now, h, datagram, &mut plain);
        self.plain = plain;
        result
    }

    fn transaction_open(
        &mut self,
        now: Instant,
        h: &Header,
        datagram: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), Ikev1Error> {
        let (Some(cipher), Some(ivs), Some(keys)) = (&self.cipher, &mut self.ivs, &self.keys) else {
            return Err(invalid("no keys"));
        };
        let mut trial = ivs.clone();
        let h_in = cipher.open(&mut trial, datagram, plain)?;
        let payloads = hashed_payloads(keys, h.message_id, h_in.next_payload, plain, "transaction")?;
        *ivs = trial;
        // A reply or ACK ends its exchange; a request's answer continues
        // the IV chain of its message ID (forgotten once answered).
        if a_ends_exchange(&payloads) {
            ivs.forget(h.message_id);
        }
        let Some(Payload::Attributes(a)) = payloads.iter().find(|p| matches!(p, Payload::Attributes(_))) else {
            return Err(invalid("transaction message without attribute payload"));
        };
        let (state, our_mid, pushed) = match self.xauth.as_ref() {
            Some(x) => (x.state, x.message_id, x.config.as_ref().map(|(mid, _)| *mid)),
            None => return Err(invalid("no XAUTH exchange")),
        };
        match (a.ty, state) {
            (ConfigType::ACK, XauthState::Done) if pushed == Some(h.message_id) => {
                if let Some((_, f)) = self.xauth.as_mut().and_then(|x| x.config.as_mut()) {
                    f.received(datagram);
                    f.deadline = None;
                }
                debug!(connection = %self.conn.name, "IKEv1 Mode Config SET acknowledged");
                Ok(())
            }
            (ConfigType::REPLY, XauthState::RequestSent) if h.message_id == our_mid => {
                self.xauth_reply(now, datagram, &a.attributes)
            }
            (ConfigType::ACK, XauthState::StatusSent) if h.message_id == our_mid => {
                self.xauth_acknowledged(now, datagram);
                Ok(())
            }
            (ConfigType::REQUEST, XauthState::Done) if h.message_id != our_mid => {
                self.mode_config_reply(now, h.message_id, datagram, a)
            }
            (ty, state) => Err(Ikev1Error::UnexpectedMessage {
                exchange: ExchangeType::TRANSACTION,
                state: format!("{state} (attribute payload {ty:?})"),
            }),
        }
    }

    /// The client's username and password: checked, and the outcome sent.
    fn xauth_reply(&mut self, now: Instant, datagram: &[u8], attributes: &[Attribute<'_>]) -> Result<(), Ikev1Error> {
        let user = variable(attributes, attr::USER_NAME);
        let password = variable(attributes, attr::USER_PASSWORD);
        let user_text = user.map(|u| String::from_utf8_lossy(u).into_owned());
        let verdict = match (user, password) {
            (Some(u), Some(p)) => self.check_password(u, p),
            _ => Err("the reply lacks the user name or the password".to_string()),
        };
        let mid = self.new_message_id()?;
        let status = if verdict.is_ok() { STATUS_OK } else { STATUS_FAIL };
        let identifier = self.xauth.as_ref().map_or(0, |x| x.identifier.wrapping_add(1));
        let set = Payload::Attributes(ConfigAttributes {
            ty: ConfigType::SET,
            identifier,
            attributes: vec![Attribute::basic(attr::STATUS, status)],
        });
        let out = self.seal_hashed(ExchangeType::TRANSACTION, mid, &[set])?;
        let Some(x) = self.xauth.as_mut() else {
            return Err(invalid("no XAUTH exchange"));
        };
        x.flight.received(datagram);
        x.flight = Flight::default();
        x.flight.sent(&out, now, &self.conn, true);
        x.message_id = mid;
        x.identifier = identifier;
        x.state = XauthState::StatusSent;
        x.user = user_text.clone();
        x.refused = verdict.err();
        let user = user_text.unwrap_or_default();
        match &x.refused {
            None => {
                info!(connection = %self.conn.name, peer = %self.remote, user = %user, "IKEv1 XAUTH: user {user} authenticated")
            }
            Some(why) => warn!(
                connection = %self.conn.name,
                peer = %self.remote,
                user = %user,
                "IKEv1 XAUTH refused user '{user}': {why}"
            ),
        }
        self.push_transmit(out);
        Ok(())
    }

    /// Client: answers the gateway's XAUTH request with our credentials and
    /// acknowledges its verdict; on success the first Quick Mode starts.
    /// Repeats of the gateway's messages are answered again.
    fn xauth_client_open(
        &mut self,
        now: Instant,
        h: &Header,
        datagram: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<(), Ikev1Error> {
        if let Some((mid, f)) = self.xauth.as_ref().and_then(|x| x.config.as_ref())
            && *mid == h.message_id
            && f.is_repeat(datagram)
        {
            if let Some(again) = f.answer_to_repeat() {
                self.push_transmit(again);
            }
            return Ok(());
        }
        let (Some(cipher), Some(ivs), Some(keys)) = (&self.cipher, &mut self.ivs, &self.keys) else {
            return Err(invalid("no keys"));
        };
        let mut trial = ivs.clone();
        let h_in = cipher.open(&mut trial, datagram, plain)?;
        let payloads = hashed_payloads(keys, h.message_id, h_in.next_payload, plain, "transaction")?;
        *ivs = trial;
        let Some(Payload::Attributes(a)) = payloads.iter().find(|p| matches!(p, Payload::Attributes(_))) else {
            return Err(invalid("transaction message without attribute payload"));
        };
        let Some(creds) = self.conn.xauth_client.clone() else {
            return Err(invalid("no XAUTH credentials"));
        };
        let status = a.attributes.iter().find(|x| x.ty == attr::STATUS).map(|x| x.value);
        let (answer, verdict) = match (a.ty, status) {
            (ConfigType::REQUEST, _) => (
                ConfigAttributes {
                    ty: ConfigType::REPLY,
                    identifier: a.identifier,
                    attributes: vec![
                        Attribute::variable(attr::USER_NAME, creds.user.as_bytes()),
                        Attribute::variable(attr::USER_PASSWORD, creds.password.as_bytes()),
                    ],
                },
                None,
            ),
            (ConfigType::SET, Some(AttributeValue::Basic(s))) => (
                ConfigAttributes {
                    ty: ConfigType::ACK,
                    identifier: a.identifier,
                    attributes: vec![Attribute::basic(attr::STATUS, s)],
                },
                Some(s == STATUS_OK),
            ),
            (ty, _) => {
                return Err(Ikev1Error::UnexpectedMessage {
                    exchange: ExchangeType::TRANSACTION,
                    state: format!("XAUTH client (attribute payload {ty:?})"),
                });
            }
        };
        let out = self.seal_hashed(ExchangeType::TRANSACTION, h.message_id, &[Payload::Attributes(answer)])?;
        if let Some(ivs) = &mut self.ivs {
            ivs.forget(h.message_id);
        }
        let mut flight = Flight::default();
        flight.received(datagram);
        flight.sent(&out, now, &self.conn, false);
        self.xauth
            .get_or_insert_with(|| Box::new(XauthServer::mode_config_only()))
            .config = Some((h.message_id, flight));
        self.push_transmit(out);
        match verdict {
            Some(true) => {
                info!(connection = %self.conn.name, user = %creds.user, "IKEv1 XAUTH: the gateway accepted user {}", creds.user);
                self.start_first_child(now);
            }
            Some(false) => {
                warn!(connection = %self.conn.name, user = %creds.user, "IKEv1 XAUTH: the gateway refused user {}", creds.user);
                self.go_down(DownReason::Failed(format!(
                    "the gateway refused XAUTH user '{}'",
                    creds.user
                )));
            }
            None => {}
        }
        Ok(())
    }

    /// Checks `password` of `user` against the local users, in constant
    /// time; the error says why, without the password.
    fn check_password(&self, user: &[u8], password: &[u8]) -> Result<(), String> {
        let users = self.ctx.eap_users.as_ref().ok_or("no local users are configured")?;
        match users.credential(user) {
            None => Err("unknown user".into()),
            Some(Credential::Password(p)) => {
                verify_slices_are_equal(p.as_bytes(), password).map_err(|_| "wrong password".to_string())
            }
            Some(Credential::NtHash(h)) => {
                let text = std::str::from_utf8(password).map_err(|_| "wrong password".to_string())?;
                let given = crate::eap::mschapv2::nt_password_hash(text);
                verify_slices_are_equal(&given[..], &h[..]).map_err(|_| "wrong password".to_string())
            }
        }
    }

    /// The client acknowledged the outcome: Done, or the SA ends.
    fn xauth_acknowledged(&mut self, now: Instant, datagram: &[u8]) {
        let Some(x) = self.xauth.as_mut() else { return };
        x.flight.received(datagram);
        x.flight.deadline = None;
        match x.refused.take() {
            None => {
                x.state = XauthState::Done;
                debug!(connection = %self.conn.name, "IKEv1 XAUTH done");
                if let Some(up) = self.up_after_xauth.take() {
                    self.events.push_back(up);
                }
                if self.conn.mode_config_push {
                    self.start_mode_config_push(now);
                }
            }
            Some(why) => {
                let user = x.user.clone().unwrap_or_default();
                if let Err(e) = self.send_isakmp_delete() {
                    warn!(connection = %self.conn.name, "IKEv1 DELETE after a failed XAUTH not sent: {e}");
                }
                self.go_down(DownReason::Failed(format!("XAUTH of user '{user}' failed: {why}")));
            }
        }
    }

    /// Answers a Mode Config request (the client pulls its configuration)
    /// with the attributes of [`Ikev1Sa::mode_config_attributes`].
    fn mode_config_reply(
        &mut self,
        now: Instant,
        mid: u32,
        datagram: &[u8],
        request: &ConfigAttributes<'_>,
    ) -> Result<(), Ikev1Error> {
        let asked: Vec<ConfigAttribute> = request
            .attributes
            .iter()
            .filter_map(|a| match a.value {
                AttributeValue::Variable(v) => Some(ConfigAttribute {
                    ty: a.ty,
                    value: v.to_vec(),
                }),
                AttributeValue::Basic(_) => None,
            })
            .collect();
        let reply = self.mode_config_attributes(&asked)?;
        let answer = Payload::Attributes(ConfigAttributes {
            ty: ConfigType::REPLY,
            identifier: request.identifier,
            attributes: reply.iter().map(|a| Attribute::variable(a.ty, &a.value)).collect(),
        });
        let out = self.seal_hashed(ExchangeType::TRANSACTION, mid, &[answer])?;
        if let Some(ivs) = &mut self.ivs {
            ivs.forget(mid);
        }
        let mut flight = Flight::default();
        flight.received(datagram);
        flight.sent(&out, now, &self.conn, false);
        if let Some(x) = self.xauth.as_mut() {
            x.config = Some((mid, flight));
        }
        self.push_transmit(out);
        Ok(())
    }

    /// Gateway with `mode_config_push`, once the client is authenticated
    /// (after XAUTH, or Main Mode without it): sends its virtual IPs and
    /// DNS servers in a SET, retransmitted until the client's ACK.
    pub(super) fn start_mode_config_push(&mut self, now: Instant) {
        if let Err(e) = self.push_mode_config(now) {
            self.fail(format!("Mode Config SET not sent: {e}"));
        }
    }

    fn push_mode_config(&mut self, now: Instant) -> Result<(), Ikev1Error> {
        if self.xauth.is_none() {
            self.xauth = Some(Box::new(XauthServer::mode_config_only()));
        }
        use crate::ike_sa::config_payload::attr;
        let asked: Vec<ConfigAttribute> = [
            attr::INTERNAL_IP4_ADDRESS,
            attr::INTERNAL_IP6_ADDRESS,
            attr::INTERNAL_IP4_DNS,
            attr::INTERNAL_IP6_DNS,
        ]
        .into_iter()
        .map(|ty| ConfigAttribute { ty, value: Vec::new() })
        .collect();
        let set = self.mode_config_attributes(&asked)?;
        let mid = self.new_message_id()?;
        let identifier = random_u32(&*self.ctx.crypto)? as u16;
        let payload = Payload::Attributes(ConfigAttributes {
            ty: ConfigType::SET,
            identifier,
            attributes: set.iter().map(|a| Attribute::variable(a.ty, &a.value)).collect(),
        });
        let out = self.seal_hashed(ExchangeType::TRANSACTION, mid, &[payload])?;
        let mut flight = Flight::default();
        flight.sent(&out, now, &self.conn, true);
        if let Some(x) = self.xauth.as_mut() {
            x.config = Some((mid, flight));
        }
        self.push_transmit(out);
        Ok(())
    }

    /// A virtual IP per family in `asked` from the connection's pools
    /// (leased to the XAUTH user, else the peer's identity, once per SA)
    /// and the connection's DNS and NBNS servers and subnets.
    fn mode_config_attributes(&mut self, asked: &[ConfigAttribute]) -> Result<Vec<ConfigAttribute>, Ikev1Error> {
        let (want_v4, want_v6) = requested_families(asked).map_err(invalid)?;
        let identity = match self.xauth_user() {
            Some(u) => u.to_string(),
            None => self.peer_id.as_ref().map(display_identity).unwrap_or_default(),
        };
        let vip = self.conn.virtual_ips.clone();
        let mut reply = Vec::new();
        for (wanted, v4) in [(want_v4, true), (want_v6, false)] {
            let existing = self.virtual_ips.iter().find(|a| a.is_ipv4() == v4).copied();
            if !wanted || vip.pools.is_empty() {
                continue;
            }
            let addr = match existing {
                Some(a) => a,
                None => match self.ctx.addresses.assign(&vip.pools, &identity, v4, None) {
                    Ok(Some(lease)) => {
                        info!(
                            connection = %self.conn.name,
                            peer = %self.remote,
                            id = %identity,
                            address = %lease.addr,
                            reconnect = lease.reused,
                            "virtual IP assigned by IKEv1 Mode Config"
                        );
                        self.virtual_ips.push(lease.addr);
                        lease.addr
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(connection = %self.conn.name, peer = %self.remote, id = %identity, "no virtual IP for IKEv1 Mode Config: {e}");
                        continue;
                    }
                },
            };
            reply.push(address_attribute(addr));
        }
        reply.extend(server_attributes(&vip, asked));
        Ok(reply)
    }

    /// Retransmits our XAUTH request or status, or gives up on a client
    /// that stopped answering.
    pub(super) fn xauth_timeouts(&mut self, now: Instant) {
        let conn = self.conn.clone();
        let Some(x) = self.xauth.as_mut() else { return };
        if let Some((_, f)) = x.config.as_mut() {
            match f.expire(now, &conn) {
                Some(true) => {
                    let again = f.last_out.clone();
                    self.push_transmit(again);
                    return;
                }
                Some(false) => {
                    warn!(connection = %conn.name, peer = %self.remote, "IKEv1 client did not acknowledge its Mode Config SET");
                    self.go_down(DownReason::Timeout);
                    return;
                }
                None => {}
            }
        }
        match x.flight.expire(now, &conn) {
            Some(true) => {
                let again = x.flight.last_out.clone();
                self.push_transmit(again);
            }
            Some(false) => {
                let state = x.state;
                warn!(connection = %conn.name, peer = %self.remote, "IKEv1 XAUTH client did not answer in {state}");
                self.go_down(DownReason::Timeout);
            }
            None => {}
        }
    }

    /// Returns the virtual IPs leased to the peer to their pools.
    pub(super) fn release_virtual_ips(&mut self) {
        for addr in std::mem::take(&mut self.virtual_ips) {
            match self.ctx.addresses.release(addr) {
                Ok(()) => debug!(connection = %self.conn.name, address = %addr, "virtual IP released"),
                Err(e) => warn!(connection = %self.conn.name, "cannot release virtual IP {addr}: {e}"),
            }
        }
    }
}
