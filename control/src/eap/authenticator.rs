//! The gateway's side of EAP: Identity, then EAP-MSCHAPv2 (or EAP-MD5 when
//! configured) against local users.
//!
//! Usage from IKE_AUTH: [`Authenticator::start`] gives the first Request to
//! put in an EAP payload; each EAP payload from the client goes through
//! [`Authenticator::handle`], whose [`AuthenticatorStep`] is either the next
//! Request or the final Success/Failure packet with the outcome (and the MSK
//! that the AUTH payloads are computed over). An `Err` means "drop this
//! packet and count it": the session is unchanged, as RFC 3748 §4 requires
//! for invalid packets.

use zeroize::Zeroizing;

use super::codec::{self, CHALLENGE_LEN, Code, DecodeError, EncodeError, MsChapV2Packet, Packet, Payload};
use super::{EapRng, Method, Msk, RngFailure, ct_eq, md5, mschapv2};

/// A user's secret as the local user store holds it.
pub enum Credential {
    /// The cleartext password (any method).
    Password(Zeroizing<String>),
    /// Only the NT hash (EAP-MSCHAPv2 only), as in strongSwan's NTLM secrets.
    NtHash(mschapv2::NtHash),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(..)",
            Credential::NtHash(_) => "Credential::NtHash(..)",
        })
    }
}

/// Where the authenticator looks users up (the secrets file, or a test).
pub trait UserStore {
    /// The credential of `identity` (the EAP Identity as sent), if the user
    /// exists.
    fn credential(&self, identity: &[u8]) -> Option<Credential>;
}

/// What the authenticator offers.
#[derive(Debug, Clone)]
pub struct AuthenticatorConfig {
    /// Methods in order of preference; a peer's Nak may select a later one.
    pub methods: Vec<Method>,
    /// The Name field of MSCHAPv2 and MD5 challenges.
    pub server_name: Vec<u8>,
}

impl Default for AuthenticatorConfig {
    fn default() -> Self {
        AuthenticatorConfig {
            methods: vec![Method::MsChapV2],
            server_name: b"ironsa".to_vec(),
        }
    }
}

/// Why a session ended in EAP-Failure; for the operator's log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    #[error("EAP-MD5 needs a cleartext password but only an NT hash is stored")]
    NoCleartextPassword,
    #[error("peer refused every offered method (it asked for types {0:?})")]
    NoCommonMethod(Vec<u8>),
    #[error("peer did not acknowledge the MSCHAPv2 failure")]
    Aborted,
}

/// Packets the authenticator drops (and the caller counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticatorError {
    #[error("malformed EAP packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("EAP Response identifier {got} does not match the outstanding Request's {expected}")]
    WrongIdentifier { expected: u8, got: u8 },
    #[error("EAP {got} is not expected while {state}")]
    WrongState { state: &'static str, got: &'static str },
    #[error("EAP-MSCHAPv2 MS-CHAPv2-ID {got} does not match the Challenge's {expected}")]
    WrongMsChapId { expected: u8, got: u8 },
    #[error("EAP Identity is empty")]
    EmptyIdentity,
    #[error("identity of {0} bytes is longer than {max}", max = codec::MAX_IDENTITY_LEN)]
    IdentityTooLong(usize),
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
pub enum AuthenticatorStep {
    /// Send this Request and wait for the next Response.
    Send(Vec<u8>),
    /// Send this EAP-Success; the peer is authenticated as `identity`. `msk`
    /// is `None` only for EAP-MD5.
    Success {
        packet: Vec<u8>,
        identity: Vec<u8>,
        msk: Option<Msk>,
    },
    /// Send this EAP-Failure.
    Failure {
        packet: Vec<u8>,
        identity: Vec<u8>,
        reason: AuthFailure,
    },
}

enum State {
    Identity,
    MsChapResponse {
        challenge: [u8; CHALLENGE_LEN],
        ms_chap_id: u8,
    },
    MsChapSuccessAck {
        msk: Msk,
    },
    MsChapFailureAck {
        reason: AuthFailure,
    },
    Md5Response {
        challenge: [u8; CHALLENGE_LEN],
    },
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Identity => "waiting for the Identity",
            State::MsChapResponse { .. } => "waiting for the MSCHAPv2 Response",
            State::MsChapSuccessAck { .. } => "waiting for the MSCHAPv2 Success acknowledgement",
            State::MsChapFailureAck { .. } => "waiting for the MSCHAPv2 Failure acknowledgement",
            State::Md5Response { .. } => "waiting for the MD5 Response",
            State::Done => "finished",
        }
    }
}

/// One EAP conversation, gateway side.
pub struct Authenticator {
    config: AuthenticatorConfig,
    state: State,
    identifier: u8,
    identity: Vec<u8>,
    credential: Option<Credential>,
    method: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("state", &self.state.name())
            .field("identifier", &self.identifier)
            .finish()
    }
}

fn describe(p: &Packet<'_>) -> &'static str {
    match (&p.code, &p.payload) {
        (Code::Request, _) => "Request",
        (Code::Success, _) => "Success",
        (Code::Failure, _) => "Failure",
        (Code::Response, Some(Payload::Identity(_))) => "Identity Response",
        (Code::Response, Some(Payload::Nak(_))) => "Nak",
        (Code::Response, Some(Payload::Md5 { .. })) => "MD5 Response",
        (Code::Response, Some(Payload::MsChapV2(MsChapV2Packet::Response { .. }))) => "MSCHAPv2 Response",
        (Code::Response, Some(Payload::MsChapV2(MsChapV2Packet::SuccessResponse))) => "MSCHAPv2 Success Response",
        (Code::Response, Some(Payload::MsChapV2(MsChapV2Packet::FailureResponse))) => "MSCHAPv2 Failure Response",
        (Code::Response, _) => "Response of another type",
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

impl Authenticator {
    /// Starts a session. With `identity` (the IKE identity, when the policy
    /// does not ask for an EAP Identity) the first Request is the method's
    /// challenge, otherwise an Identity Request.
    pub fn start(
        config: AuthenticatorConfig,
        identity: Option<&[u8]>,
        users: &dyn UserStore,
        rng: &mut dyn EapRng,
    ) -> Result<(Self, Vec<u8>), AuthenticatorError> {
        let mut first = [0u8; 1];
        rng.fill(&mut first)?;
        let mut a = Authenticator {
            config,
            state: State::Identity,
            identifier: first[0],
            identity: Vec::new(),
            credential: None,
            method: 0,
        };
        let request = match identity {
            Some(id) => a.accept_identity(id, users, rng)?,
            None => codec::encode(&Packet {
                code: Code::Request,
                identifier: a.identifier,
                payload: Some(Payload::Identity(b"")),
            })?,
        };
        Ok((a, request))
    }

    /// The identity being authenticated (empty before the Identity Response).
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// Why the session is failing, once the MSCHAPv2 Failure Request went
    /// out (a client may abort then instead of acknowledging it).
    pub fn pending_failure(&self) -> Option<&AuthFailure> {
        match &self.state {
            State::MsChapFailureAck { reason } => Some(reason),
            _ => None,
        }
    }

    /// The EAP-Failure to send when the IKE layer gives up on the peer.
    pub fn abort(&mut self) -> Vec<u8> {
        self.state = State::Done;
        [Code::Failure as u8, self.identifier, 0, 4].to_vec()
    }

    fn accept_identity(
        &mut self,
        id: &[u8],
        users: &dyn UserStore,
        rng: &mut dyn EapRng,
    ) -> Result<Vec<u8>, AuthenticatorError> {
        if id.is_empty() {
            return Err(AuthenticatorError::EmptyIdentity);
        }
        if id.len() > codec::MAX_IDENTITY_LEN {
            return Err(AuthenticatorError::IdentityTooLong(id.len()));
        }
        self.identity = id.to_vec();
        // An unknown user still gets a challenge, so that probing does not
        // reveal which users exist.
        self.credential = users.credential(id);
        self.method = 0;
        self.challenge(rng)
    }

    fn next_request(&mut self, payload: Payload<'_>) -> Result<Vec<u8>, AuthenticatorError> {
        let identifier = self.identifier.wrapping_add(1);
        let bytes = codec::encode(&Packet {
            code: Code::Request,
            identifier,
            payload: Some(payload),
        })?;
        self.identifier = identifier;
        Ok(bytes)
    }

    fn challenge(&mut self, rng: &mut dyn EapRng) -> Result<Vec<u8>, AuthenticatorError> {
        let mut challenge = [0u8; CHALLENGE_LEN];
        rng.fill(&mut challenge)?;
        let name = self.config.server_name.clone();
        match self
            .config
            .methods
            .get(self.method)
            .copied()
            .unwrap_or(Method::MsChapV2)
        {
            Method::MsChapV2 => {
                let ms_chap_id = self.identifier.wrapping_add(1);
                let req = self.next_request(Payload::MsChapV2(MsChapV2Packet::Challenge {
                    ms_chap_id,
                    challenge: &challenge,
                    name: &name,
                }))?;
                self.state = State::MsChapResponse { challenge, ms_chap_id };
                Ok(req)
            }
            Method::Md5 => {
                let req = self.next_request(Payload::Md5 {
                    value: &challenge,
                    name: &name,
                })?;
                self.state = State::Md5Response { challenge };
                Ok(req)
            }
        }
    }

    fn finish(&mut self, code: Code) -> Vec<u8> {
        self.state = State::Done;
        [code as u8, self.identifier, 0, 4].to_vec()
    }

    fn fail(&mut self, reason: AuthFailure) -> AuthenticatorStep {
        AuthenticatorStep::Failure {
            packet: self.finish(Code::Failure),
            identity: self.identity.clone(),
            reason,
        }
    }

    /// Processes one EAP packet from the peer.
    pub fn handle(
        &mut self,
        packet: &[u8],
        users: &dyn UserStore,
        rng: &mut dyn EapRng,
    ) -> Result<AuthenticatorStep, AuthenticatorError> {
        if matches!(self.state, State::Done) {
            return Err(AuthenticatorError::Finished);
        }
        let p = codec::decode(packet)?;
        if p.code != Code::Response {
            return Err(AuthenticatorError::WrongState {
                state: self.state.name(),
                got: describe(&p),
            });
        }
        if p.identifier != self.identifier {
            return Err(AuthenticatorError::WrongIdentifier {
                expected: self.identifier,
                got: p.identifier,
            });
        }
        let wrong_state = |s: &State| AuthenticatorError::WrongState {
            state: s.name(),
            got: describe(&p),
        };
        match (&self.state, &p.payload) {
            (State::Identity, Some(Payload::Identity(id))) => {
                Ok(AuthenticatorStep::Send(self.accept_identity(id, users, rng)?))
            }
            (State::MsChapResponse { .. } | State::Md5Response { .. }, Some(Payload::Nak(wanted))) => {
                let current = self.method;
                let pick = self
                    .config
                    .methods
                    .iter()
                    .enumerate()
                    .find(|(i, m)| *i != current && wanted.contains(&m.eap_type()))
                    .map(|(i, _)| i);
                match pick {
                    Some(i) => {
                        self.method = i;
                        Ok(AuthenticatorStep::Send(self.challenge(rng)?))
                    }
                    None => Ok(self.fail(AuthFailure::NoCommonMethod(wanted.to_vec()))),
                }
            }
            (
                State::MsChapResponse { challenge, ms_chap_id },
                Some(Payload::MsChapV2(MsChapV2Packet::Response {
                    ms_chap_id: got,
                    peer_challenge,
                    nt_response,
                    name,
                    ..
                })),
            ) => {
                if got != ms_chap_id {
                    return Err(AuthenticatorError::WrongMsChapId {
                        expected: *ms_chap_id,
                        got: *got,
                    });
                }
                let (challenge, ms_chap_id) = (*challenge, *ms_chap_id);
                let hash = match &self.credential {
                    Some(Credential::Password(p)) => Some(mschapv2::nt_password_hash(p)),
                    Some(Credential::NtHash(h)) => Some(h.clone()),
                    None => None,
                };
                let verdict = match &hash {
                    None => Err(AuthFailure::UnknownUser),
                    Some(h) => {
                        let expected = mschapv2::generate_nt_response(&challenge, peer_challenge, name, h);
                        if ct_eq(&expected, &nt_response[..]) {
                            Ok(h)
                        } else {
                            Err(AuthFailure::WrongPassword)
                        }
                    }
                };
                match verdict {
                    Ok(h) => {
                        let s = mschapv2::authenticator_response(h, nt_response, peer_challenge, &challenge, name);
                        let mut message = s.to_vec();
                        message.extend_from_slice(b" M=Welcome");
                        let req = self.next_request(Payload::MsChapV2(MsChapV2Packet::SuccessRequest {
                            ms_chap_id,
                            message: &message,
                        }))?;
                        self.state = State::MsChapSuccessAck {
                            msk: mschapv2::msk(h, nt_response),
                        };
                        Ok(AuthenticatorStep::Send(req))
                    }
                    Err(reason) => {
                        // RFC 2759 §6, as Windows formats it: not retryable.
                        let mut fresh = [0u8; CHALLENGE_LEN];
                        rng.fill(&mut fresh)?;
                        let message = format!("E=691 R=0 C={} V=3 M=Authentication failed", hex_upper(&fresh));
                        let req = self.next_request(Payload::MsChapV2(MsChapV2Packet::FailureRequest {
                            ms_chap_id,
                            message: message.as_bytes(),
                        }))?;
                        self.state = State::MsChapFailureAck { reason };
                        Ok(AuthenticatorStep::Send(req))
                    }
                }
            }
            (State::MsChapSuccessAck { .. }, Some(Payload::MsChapV2(MsChapV2Packet::SuccessResponse))) => {
                let State::MsChapSuccessAck { msk } = std::mem::replace(&mut self.state, State::Done) else {
                    return Err(AuthenticatorError::Finished);
                };
                Ok(AuthenticatorStep::Success {
                    packet: self.finish(Code::Success),
                    identity: self.identity.clone(),
                    msk: Some(msk),
                })
            }
            (State::MsChapFailureAck { reason }, Some(Payload::MsChapV2(MsChapV2Packet::FailureResponse))) => {
                let reason = reason.clone();
                Ok(self.fail(reason))
            }
            (State::Md5Response { challenge }, Some(Payload::Md5 { value, .. })) => {
                let verdict = match &self.credential {
                    None => Err(AuthFailure::UnknownUser),
                    Some(Credential::NtHash(_)) => Err(AuthFailure::NoCleartextPassword),
                    Some(Credential::Password(pw)) => {
                        let expected = md5::response(self.identifier, pw.as_bytes(), challenge);
                        if ct_eq(&expected, value) {
                            Ok(())
                        } else {
                            Err(AuthFailure::WrongPassword)
                        }
                    }
                };
                Ok(match verdict {
                    Ok(()) => AuthenticatorStep::Success {
                        packet: self.finish(Code::Success),
                        identity: self.identity.clone(),
                        msk: None,
                    },
                    Err(reason) => self.fail(reason),
                })
            }
            (state, _) => Err(wrong_state(state)),
        }
    }
}
