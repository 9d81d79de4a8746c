//! EAP relayed to RADIUS (RFC 3579): each EAP Response an IKE SA emits
//! ([`control::ike_sa::Event::EapRelay`]) becomes an Access-Request on the
//! RADIUS client's thread; the verified reply comes back to the shard as an
//! [`EapBackendReply`] (Challenge, Accept with the MSK from the MPPE keys,
//! Session-Timeout and Class, or Reject). Shards never wait on RADIUS.

use std::time::Duration;

use control::ike_sa::eap::{EapBackendReply, EapRelay};

use super::client::{ClientError, RadiusClient, Reply, Request};
use super::radius::{Attr, Code};

/// NAS-Port-Type Virtual (RFC 2865 §5.41), as strongSwan sends for IKE.
const NAS_PORT_TYPE_VIRTUAL: u32 = 5;
/// Service-Type Framed (RFC 2865 §5.6).
const SERVICE_TYPE_FRAMED: u32 = 2;

/// The RADIUS client and what every Access-Request of the gateway carries.
pub struct EapRadius {
    client: RadiusClient,
    nas_identifier: String,
}

impl std::fmt::Debug for EapRadius {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EapRadius")
            .field("nas_identifier", &self.nas_identifier)
            .finish_non_exhaustive()
    }
}

impl EapRadius {
    /// Wraps a started client.
    pub fn new(client: RadiusClient, nas_identifier: String) -> Self {
        EapRadius { client, nas_identifier }
    }

    /// The client (its counters).
    pub fn client(&self) -> &RadiusClient {
        &self.client
    }

    /// The Access-Request that carries `relay`.
    pub fn request(&self, relay: &EapRelay) -> Request {
        let mut attributes = vec![
            (Attr::NAS_IDENTIFIER, self.nas_identifier.as_bytes().to_vec()),
            (Attr::NAS_PORT_TYPE, NAS_PORT_TYPE_VIRTUAL.to_be_bytes().to_vec()),
            (Attr::SERVICE_TYPE, SERVICE_TYPE_FRAMED.to_be_bytes().to_vec()),
            (Attr::CALLING_STATION_ID, relay.peer.ip().to_string().into_bytes()),
        ];
        attributes.retain(|(_, v)| !v.is_empty());
        Request {
            user_name: relay.identity.clone(),
            eap_message: Some(relay.eap.clone()),
            state: (!relay.state.is_empty()).then(|| relay.state.clone()),
            attributes,
        }
    }

    /// Sends `relay` to the RADIUS servers; `done` runs on the RADIUS
    /// thread with the answer (also when no server answers). An error means
    /// the request was not queued (too many in flight, client stopped).
    pub fn relay(
        &self,
        relay: &EapRelay,
        done: impl FnOnce(EapBackendReply) + Send + 'static,
    ) -> Result<(), ClientError> {
        self.client
            .submit(self.request(relay), Box::new(move |r| done(backend_reply(r))))
    }
}

/// What an IKE SA makes of a RADIUS outcome.
pub fn backend_reply(outcome: Result<Reply, ClientError>) -> EapBackendReply {
    let reply = match outcome {
        Ok(r) => r,
        Err(e) => {
            return EapBackendReply::Reject {
                eap: None,
                reason: e.to_string(),
            };
        }
    };
    match reply.code {
        Code::AccessChallenge => match reply.eap_message {
            Some(eap) => EapBackendReply::Challenge {
                eap,
                state: reply.state.unwrap_or_default(),
            },
            None => EapBackendReply::Reject {
                eap: None,
                reason: format!(
                    "RADIUS server {} sent an Access-Challenge without EAP-Message",
                    reply.server
                ),
            },
        },
        Code::AccessAccept => EapBackendReply::Accept {
            msk: reply.msk(),
            eap: reply.eap_message,
            session_timeout: reply.session_timeout.map(|s| Duration::from_secs(u64::from(s))),
            class: reply.class,
            framed_ip: reply.framed_ip_address.map(std::net::IpAddr::V4),
            framed_pool: reply.framed_pool.and_then(|p| match String::from_utf8(p) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(
                        server = %reply.server,
                        "RADIUS Framed-Pool is not UTF-8 and names no pool; ignored"
                    );
                    None
                }
            }),
            interim_interval: reply
                .acct_interim_interval
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        },
        Code::AccessReject => EapBackendReply::Reject {
            eap: reply.eap_message,
            reason: format!("RADIUS server {} rejected the user (Access-Reject)", reply.server),
        },
        other => EapBackendReply::Reject {
            eap: None,
            reason: format!("RADIUS server {} answered with code {}", reply.server, other.to_u8()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: Code) -> Reply {
        Reply {
            code,
            server: "127.0.0.1:1812".parse().unwrap(),
            eap_message: None,
            state: None,
            mppe_send_key: None,
            mppe_recv_key: None,
            framed_ip_address: None,
            framed_pool: None,
            session_timeout: None,
            acct_interim_interval: None,
            class: Vec::new(),
        }
    }

    #[test]
    fn radius_outcomes_become_backend_replies() {
        let mut challenge = reply(Code::AccessChallenge);
        challenge.eap_message = Some(vec![1, 7, 0, 5, 1]);
        challenge.state = Some(b"s".to_vec());
        assert!(matches!(backend_reply(Ok(challenge)),
            EapBackendReply::Challenge { eap, state } if eap == [1, 7, 0, 5, 1] && state == b"s"));
        // A challenge that carries no EAP cannot go on.
        assert!(matches!(
            backend_reply(Ok(reply(Code::AccessChallenge))),
            EapBackendReply::Reject { .. }
        ));
        let mut accept = reply(Code::AccessAccept);
        accept.mppe_recv_key = Some(zeroize::Zeroizing::new(vec![1; 32]));
        accept.mppe_send_key = Some(zeroize::Zeroizing::new(vec![2; 32]));
        accept.session_timeout = Some(600);
        accept.class = vec![b"gold".to_vec()];
        accept.framed_pool = Some(b"gold-pool".to_vec());
        accept.acct_interim_interval = Some(300);
        match backend_reply(Ok(accept)) {
            EapBackendReply::Accept {
                msk,
                session_timeout,
                class,
                framed_pool,
                interim_interval,
                ..
            } => {
                assert_eq!(framed_pool.as_deref(), Some("gold-pool"));
                assert_eq!(interim_interval, Some(Duration::from_secs(300)));
                let msk = msk.expect("MSK from the MPPE keys");
                assert_eq!((&msk[..32], &msk[32..]), (&[1u8; 32][..], &[2u8; 32][..]));
                assert_eq!(session_timeout, Some(Duration::from_secs(600)));
                assert_eq!(class, vec![b"gold".to_vec()]);
            }
            other => panic!("{other:?}"),
        }
        match backend_reply(Ok(reply(Code::AccessReject))) {
            EapBackendReply::Reject { reason, .. } => assert!(reason.contains("Access-Reject"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match backend_reply(Err(ClientError::AllServersDown { servers: 2, tries: 3 })) {
            EapBackendReply::Reject { reason, .. } => assert!(reason.contains("no RADIUS server answered"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
