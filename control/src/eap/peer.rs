//! The client's side of EAP: answers Identity, EAP-MSCHAPv2 and (when
//! allowed) EAP-MD5 Requests, Naks anything else, and accepts EAP-Success
//! only after the MSCHAPv2 authenticator response proved the server knows
//! the password.

use zeroize::Zeroizing;

use super::codec::{self, CHALLENGE_LEN, Code, DecodeError, EncodeError, MsChapV2Packet, Packet, Payload};
use super::{EapRng, Method, Msk, RngFailure, ct_eq, md5, mschapv2};

/// The client's identity and secret.
#[derive(Clone)]
pub struct PeerConfig {
    /// Sent as the EAP Identity and the MSCHAPv2 Name.
    pub identity: Vec<u8>,
    pub password: Zeroizing<String>,
    /// Methods the peer agrees to, in order of preference (for its Nak).
    pub methods: Vec<Method>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("methods", &self.methods)
            .finish()
    }
}

/// Packets the peer drops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("malformed EAP packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("EAP {got} is not expected while {state}")]
    WrongState { state: &'static str, got: &'static str },
    #[error("EAP {code:?} identifier {got} does not match the last Response's {expected}")]
    WrongIdentifier { code: Code, expected: u8, got: u8 },
    #[error("EAP-Success before the server proved itself (mutual authentication missing)")]
    UnauthenticatedSuccess,
    #[error("EAP-MSCHAPv2 authenticator response does not verify: the server does not know the password")]
    BadAuthenticatorResponse,
    #[error("the EAP session is already finished")]
    Finished,
    #[error(transparent)]
    Rng(#[from] RngFailure),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// What the IKE layer does next.
#[derive(Debug)]
#[non_exhaustive]
pub enum PeerStep {
    /// Send this Response.
    Send(Vec<u8>),
    /// Authenticated; `msk` is `None` only for EAP-MD5.
    Success { msk: Option<Msk> },
    /// The server refused; `detail` is the MSCHAPv2 failure text if any.
    Failure { detail: Option<String> },
}

enum State {
    /// Waiting for Identity or a method Request.
    Idle,
    /// Sent the MSCHAPv2 Response; waiting for Success/Failure Request.
    MsChapSent {
        expected_s: [u8; mschapv2::AUTH_RESPONSE_LEN],
        msk: Msk,
        ms_chap_id: u8,
    },
    /// Server proved itself; waiting for EAP-Success.
    Verified {
        msk: Option<Msk>,
    },
    /// Acknowledged an MSCHAPv2 Failure; waiting for EAP-Failure.
    Refused {
        detail: String,
    },
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "waiting for a Request",
            State::MsChapSent { .. } => "waiting for the MSCHAPv2 result",
            State::Verified { .. } => "waiting for EAP-Success",
            State::Refused { .. } => "waiting for EAP-Failure",
            State::Done => "finished",
        }
    }
}

/// One EAP conversation, client side.
pub struct Peer {
    config: PeerConfig,
    state: State,
    last_identifier: Option<u8>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("state", &self.state.name()).finish()
    }
}

impl Peer {
    pub fn new(config: PeerConfig) -> Self {
        Peer {
            config,
            state: State::Idle,
            last_identifier: None,
        }
    }

    fn respond(&mut self, identifier: u8, payload: Payload<'_>) -> Result<PeerStep, PeerError> {
        let bytes = codec::encode(&Packet {
            code: Code::Response,
            identifier,
            payload: Some(payload),
        })?;
        self.last_identifier = Some(identifier);
        Ok(PeerStep::Send(bytes))
    }

    /// Processes one EAP packet from the server.
    pub fn handle(&mut self, packet: &[u8], rng: &mut dyn EapRng) -> Result<PeerStep, PeerError> {
        if matches!(self.state, State::Done) {
            return Err(PeerError::Finished);
        }
        let p = codec::decode(packet)?;
        let wrong = |state: &State, got: &'static str| PeerError::WrongState {
            state: state.name(),
            got,
        };
        match p.code {
            Code::Response => Err(wrong(&self.state, "Response")),
            Code::Success | Code::Failure => {
                if let Some(expected) = self.last_identifier
                    && expected != p.identifier
                {
                    return Err(PeerError::WrongIdentifier {
                        code: p.code,
                        expected,
                        got: p.identifier,
                    });
                }
                let state = std::mem::replace(&mut self.state, State::Done);
                match (p.code, state) {
                    (Code::Success, State::Verified { msk }) => Ok(PeerStep::Success { msk }),
                    (Code::Failure, State::Refused { detail }) => Ok(PeerStep::Failure { detail: Some(detail) }),
                    (Code::Failure, _) => Ok(PeerStep::Failure { detail: None }),
                    (_, other) => {
                        self.state = other;
                        Err(PeerError::UnauthenticatedSuccess)
                    }
                }
            }
            Code::Request => {
                let Some(payload) = &p.payload else {
                    return Err(wrong(&self.state, "Request without a type"));
                };
                match (&self.state, payload) {
                    (State::Idle, Payload::Identity(_)) => {
                        let id = self.config.identity.clone();
                        self.respond(p.identifier, Payload::Identity(&id))
                    }
                    (_, Payload::Notification(_)) => self.respond(p.identifier, Payload::Notification(b"")),
                    (
                        State::Idle,
                        Payload::MsChapV2(MsChapV2Packet::Challenge {
                            ms_chap_id, challenge, ..
                        }),
                    ) if self.config.methods.contains(&Method::MsChapV2) => {
                        let mut peer_challenge = [0u8; CHALLENGE_LEN];
                        rng.fill(&mut peer_challenge)?;
                        let hash = mschapv2::nt_password_hash(&self.config.password);
                        let name = self.config.identity.clone();
                        let nt = mschapv2::generate_nt_response(challenge, &peer_challenge, &name, &hash);
                        let expected_s =
                            mschapv2::authenticator_response(&hash, &nt, &peer_challenge, challenge, &name);
                        let msk = mschapv2::msk(&hash, &nt);
                        let ms_chap_id = *ms_chap_id;
                        let step = self.respond(
                            p.identifier,
                            Payload::MsChapV2(MsChapV2Packet::Response {
                                ms_chap_id,
                                peer_challenge: &peer_challenge,
                                nt_response: &nt,
                                flags: 0,
                                name: &name,
                            }),
                        )?;
                        self.state = State::MsChapSent {
                            expected_s,
                            msk,
                            ms_chap_id,
                        };
                        Ok(step)
                    }
                    (
                        State::MsChapSent {
                            expected_s, ms_chap_id, ..
                        },
                        Payload::MsChapV2(MsChapV2Packet::SuccessRequest {
                            ms_chap_id: got,
                            message,
                        }),
                    ) => {
                        // "S=<40 hex> M=<text>"; hex case varies between servers.
                        let s = message.get(..mschapv2::AUTH_RESPONSE_LEN).unwrap_or(message);
                        let s_upper: Vec<u8> = s.to_ascii_uppercase();
                        if got != ms_chap_id || !ct_eq(&s_upper, &expected_s[..]) {
                            return Err(PeerError::BadAuthenticatorResponse);
                        }
                        let step = self.respond(p.identifier, Payload::MsChapV2(MsChapV2Packet::SuccessResponse))?;
                        let State::MsChapSent { msk, .. } = std::mem::replace(&mut self.state, State::Idle) else {
                            return Err(PeerError::Finished);
                        };
                        self.state = State::Verified { msk: Some(msk) };
                        Ok(step)
                    }
                    (State::MsChapSent { .. }, Payload::MsChapV2(MsChapV2Packet::FailureRequest { message, .. })) => {
                        let detail = String::from_utf8_lossy(message).into_owned();
                        let step = self.respond(p.identifier, Payload::MsChapV2(MsChapV2Packet::FailureResponse))?;
                        self.state = State::Refused { detail };
                        Ok(step)
                    }
                    (State::Idle, Payload::Md5 { value, .. }) if self.config.methods.contains(&Method::Md5) => {
                        let r = md5::response(p.identifier, self.config.password.as_bytes(), value);
                        let step = self.respond(p.identifier, Payload::Md5 { value: &r, name: b"" })?;
                        // EAP-MD5 is one-way: the server proves nothing.
                        self.state = State::Verified { msk: None };
                        Ok(step)
                    }
                    (
                        State::Idle,
                        Payload::MsChapV2(MsChapV2Packet::Challenge { .. })
                        | Payload::Md5 { .. }
                        | Payload::Other { .. },
                    ) => {
                        let wanted: Vec<u8> = self.config.methods.iter().map(|m| m.eap_type()).collect();
                        let wanted = if wanted.is_empty() { vec![0] } else { wanted };
                        self.respond(p.identifier, Payload::Nak(&wanted))
                    }
                    (state, _) => Err(wrong(state, "Request")),
                }
            }
        }
    }
}
