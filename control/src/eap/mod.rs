//! EAP (RFC 3748) for IKEv2's EAP authentication (RFC 7296 §2.16).
//!
//! Sans-IO like the rest of this crate: the codec borrows from the input
//! buffer, and the method state machines take one EAP packet and return the
//! next one (or an outcome). Randomness comes from the caller through
//! [`EapRng`], so the IKE layer can hand in its own provider.
//!
//! - [`Packet`]: strict decoding and encoding of Request/Response/Success/
//!   Failure with Identity, Notification, Nak, MD5-Challenge and MSCHAPv2.
//! - [`mschapv2`]: the RFC 2759 / RFC 3079 computations and the 64-byte MSK.
//! - [`Authenticator`]: the gateway role (Identity, then MSCHAPv2 or MD5,
//!   against a [`UserStore`]).
//! - [`Peer`]: the client role.
//! - [`tls`]: EAP-TLS (RFC 5216, RFC 9190) over rustls, both roles as
//!   method state machines that run after EAP-Identity, with their TLS
//!   configurations built from DER certificates and keys.

mod authenticator;
mod codec;
pub mod fuzzing;
pub mod md5;
pub mod mschapv2;
mod peer;
pub mod tls;

pub use authenticator::{
    AuthFailure, Authenticator, AuthenticatorConfig, AuthenticatorError, AuthenticatorStep, Credential, UserStore,
};
pub use codec::{
    Code, DecodeError, EapType, EncodeError, MAX_IDENTITY_LEN, MsChapV2Packet, Packet, Payload, decode, encode,
};
pub use peer::{Peer, PeerConfig, PeerError, PeerStep};

/// The EAP Master Session Key (RFC 3748 §7.10): 64 bytes, the IKEv2 AUTH key.
pub type Msk = zeroize::Zeroizing<[u8; 64]>;

/// The RNG failed; EAP must not continue without fresh challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("random number generator failed")]
pub struct RngFailure;

/// Where the EAP state machines get their challenges from.
///
/// Any `FnMut(&mut [u8]) -> Result<(), RngFailure>` is one, so a crypto
/// provider plugs in with a closure.
pub trait EapRng {
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngFailure>;
}

impl<F: FnMut(&mut [u8]) -> Result<(), RngFailure>> EapRng for F {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngFailure> {
        self(buf)
    }
}

/// The operating system's CSPRNG through aws-lc-rs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl EapRng for SystemRng {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RngFailure> {
        use aws_lc_rs::rand::SecureRandom;
        aws_lc_rs::rand::SystemRandom::new().fill(buf).map_err(|_| RngFailure)
    }
}

/// The EAP method a session runs after the Identity exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2), with an MSK.
    MsChapV2,
    /// EAP-MD5 (RFC 3748 §5.4): no MSK, for test clients only.
    Md5,
}

impl Method {
    /// The EAP Type number of the method.
    pub fn eap_type(self) -> u8 {
        match self {
            Method::MsChapV2 => EapType::MSCHAPV2,
            Method::Md5 => EapType::MD5_CHALLENGE,
        }
    }
}

/// Constant-time equality for authenticator values.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
