//! ISAKMP header, payload structures and registries (RFC 2408 §3, RFC 2407
//! §4, RFC 3947 §3-§5, draft-dukes-ike-mode-cfg §3.2).
//!
//! Decoded payloads borrow their variable-length fields from the datagram
//! (or from the decrypted plaintext), so decoding copies nothing.

use std::fmt;

use crate::wire::ikev2::types::registry;

/// Length of the fixed ISAKMP header (RFC 2408 §3.1).
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header (RFC 2408 §3.2).
pub const GENERIC_HEADER_LEN: usize = 4;
/// The version octet we send and accept: major 1, minor 0.
pub const VERSION: u8 = 0x10;
/// Header flag: the payloads after the header are encrypted.
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// Header flag: commit bit (RFC 2408 §3.1).
pub const FLAG_COMMIT: u8 = 0x02;
/// Header flag: authentication only.
pub const FLAG_AUTH_ONLY: u8 = 0x04;
/// The IPsec Domain of Interpretation (RFC 2407 §4.2).
pub const DOI_IPSEC: u32 = 1;
/// The only IPsec DOI situation we accept (RFC 2407 §4.2.1).
pub const SIT_IDENTITY_ONLY: u32 = 1;
/// Attribute format bit: set for a basic (TV) attribute, clear for TLV.
pub const ATTRIBUTE_FORMAT_TV: u16 = 0x8000;

registry!(
    /// Exchange types (RFC 2408 §3.1, RFC 2409 §5, draft-dukes-ike-mode-cfg).
    ExchangeType(u8) {
        /// Base exchange
        BASE = 1,
        /// Identity Protection (Main Mode)
        IDENTITY_PROTECTION = 2,
        /// Authentication Only
        AUTHENTICATION_ONLY = 3,
        /// Aggressive Mode
        AGGRESSIVE = 4,
        /// Informational
        INFORMATIONAL = 5,
        /// Transaction (Mode Config, XAUTH)
        TRANSACTION = 6,
        /// Quick Mode
        QUICK = 32,
        /// New Group Mode
        NEW_GROUP = 33,
    }
);

impl ExchangeType {
    /// True for the exchange types this codec decodes.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

registry!(
    /// Payload types (RFC 2408 §3.1, RFC 3947 §3.1 and §5.2, Mode Config).
    PayloadType(u8) {
        /// No next payload.
        NONE = 0,
        /// Security Association
        SA = 1,
        /// Proposal (only inside an SA payload)
        PROPOSAL = 2,
        /// Transform (only inside a proposal)
        TRANSFORM = 3,
        /// Key Exchange
        KE = 4,
        /// Identification
        ID = 5,
        /// Certificate
        CERT = 6,
        /// Certificate Request
        CERTREQ = 7,
        /// Hash
        HASH = 8,
        /// Signature
        SIG = 9,
        /// Nonce
        NONCE = 10,
        /// Notification
        NOTIFY = 11,
        /// Delete
        DELETE = 12,
        /// Vendor ID
        VENDOR_ID = 13,
        /// Attribute (Mode Config, XAUTH)
        ATTRIBUTE = 14,
        /// NAT Discovery (RFC 3947)
        NAT_D = 20,
        /// NAT Original Address (RFC 3947)
        NAT_OA = 21,
        /// NAT Discovery as sent by peers of draft-ietf-ipsec-nat-t-ike-02/03
        NAT_D_DRAFT = 130,
        /// NAT Original Address of the same drafts
        NAT_OA_DRAFT = 131,
    }
);

registry!(
    /// Protocol IDs in proposals, notifies and deletes (RFC 2407 §4.4.1).
    ProtocolId(u8) {
        /// ISAKMP (Phase 1)
        ISAKMP = 1,
        /// AH
        AH = 2,
        /// ESP
        ESP = 3,
        /// IPCOMP
        IPCOMP = 4,
    }
);

registry!(
    /// Notify message types (RFC 2408 §3.14.1, RFC 2407 §4.6.3, RFC 3706).
    NotifyType(u16) {
        /// INVALID-PAYLOAD-TYPE
        INVALID_PAYLOAD_TYPE = 1,
        /// DOI-NOT-SUPPORTED
        DOI_NOT_SUPPORTED = 2,
        /// SITUATION-NOT-SUPPORTED
        SITUATION_NOT_SUPPORTED = 3,
        /// INVALID-COOKIE
        INVALID_COOKIE = 4,
        /// INVALID-MAJOR-VERSION
        INVALID_MAJOR_VERSION = 5,
        /// INVALID-EXCHANGE-TYPE
        INVALID_EXCHANGE_TYPE = 7,
        /// INVALID-FLAGS
        INVALID_FLAGS = 8,
        /// INVALID-MESSAGE-ID
        INVALID_MESSAGE_ID = 9,
        /// INVALID-PROTOCOL-ID
        INVALID_PROTOCOL_ID = 10,
        /// INVALID-SPI
        INVALID_SPI = 11,
        /// INVALID-TRANSFORM-ID
        INVALID_TRANSFORM_ID = 12,
        /// ATTRIBUTES-NOT-SUPPORTED
        ATTRIBUTES_NOT_SUPPORTED = 13,
        /// NO-PROPOSAL-CHOSEN
        NO_PROPOSAL_CHOSEN = 14,
        /// BAD-PROPOSAL-SYNTAX
        BAD_PROPOSAL_SYNTAX = 15,
        /// PAYLOAD-MALFORMED
        PAYLOAD_MALFORMED = 16,
        /// INVALID-KEY-INFORMATION
        INVALID_KEY_INFORMATION = 17,
        /// INVALID-ID-INFORMATION
        INVALID_ID_INFORMATION = 18,
        /// AUTHENTICATION-FAILED
        AUTHENTICATION_FAILED = 24,
        /// INVALID-HASH-INFORMATION
        INVALID_HASH_INFORMATION = 23,
        /// INVALID-SIGNATURE
        INVALID_SIGNATURE = 25,
        /// RESPONDER-LIFETIME (RFC 2407 §4.6.3.1)
        RESPONDER_LIFETIME = 24576,
        /// REPLAY-STATUS
        REPLAY_STATUS = 24577,
        /// INITIAL-CONTACT
        INITIAL_CONTACT = 24578,
        /// R-U-THERE (RFC 3706)
        DPD_R_U_THERE = 36136,
        /// R-U-THERE-ACK (RFC 3706)
        DPD_R_U_THERE_ACK = 36137,
    }
);

registry!(
    /// Identification types of the IPsec DOI (RFC 2407 §4.6.2.1).
    IdType(u8) {
        /// ID_IPV4_ADDR
        IPV4_ADDR = 1,
        /// ID_FQDN
        FQDN = 2,
        /// ID_USER_FQDN
        USER_FQDN = 3,
        /// ID_IPV4_ADDR_SUBNET
        IPV4_ADDR_SUBNET = 4,
        /// ID_IPV6_ADDR
        IPV6_ADDR = 5,
        /// ID_IPV6_ADDR_SUBNET
        IPV6_ADDR_SUBNET = 6,
        /// ID_IPV4_ADDR_RANGE
        IPV4_ADDR_RANGE = 7,
        /// ID_IPV6_ADDR_RANGE
        IPV6_ADDR_RANGE = 8,
        /// ID_DER_ASN1_DN
        DER_ASN1_DN = 9,
        /// ID_DER_ASN1_GN
        DER_ASN1_GN = 10,
        /// ID_KEY_ID
        KEY_ID = 11,
    }
);

/// The fixed ISAKMP header (RFC 2408 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Initiator cookie.
    pub cookie_i: u64,
    /// Responder cookie (zero in the first message of Phase 1).
    pub cookie_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Major and minor version (0x10).
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// E, C and A flags.
    pub flags: u8,
    /// Message ID (zero in Phase 1).
    pub message_id: u32,
    /// Length of the whole message, header included.
    pub length: u32,
}

impl Header {
    /// True when the payloads are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTION != 0
    }
}

/// A data attribute (RFC 2408 §3.3): basic (TV, a 16-bit value) or
/// variable (TLV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// Attribute type without the format bit.
    pub ty: u16,
    /// The value.
    pub value: AttributeValue<'a>,
}

/// The value of a data attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributeValue<'a> {
    /// A basic attribute's 16-bit value.
    Basic(u16),
    /// A variable-length attribute's value.
    Variable(&'a [u8]),
}

impl<'a> Attribute<'a> {
    /// A basic attribute.
    pub fn basic(ty: u16, value: u16) -> Self {
        Attribute {
            ty,
            value: AttributeValue::Basic(value),
        }
    }

    /// A variable attribute.
    pub fn variable(ty: u16, value: &'a [u8]) -> Self {
        Attribute {
            ty,
            value: AttributeValue::Variable(value),
        }
    }

    /// The value as an integer: a basic value, or a variable one of at most
    /// 4 bytes in network order (lifetimes may come either way).
    pub fn as_u32(&self) -> Option<u32> {
        match self.value {
            AttributeValue::Basic(v) => Some(u32::from(v)),
            AttributeValue::Variable(b) if b.len() <= 4 => {
                Some(b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)))
            }
            AttributeValue::Variable(_) => None,
        }
    }
}

/// A transform payload (RFC 2408 §3.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform<'a> {
    /// Transform number.
    pub number: u8,
    /// Transform ID (KEY_IKE = 1 in Phase 1, the ESP transform in Phase 2).
    pub id: u8,
    /// SA attributes.
    pub attributes: Vec<Attribute<'a>>,
}

/// A proposal payload (RFC 2408 §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal<'a> {
    /// Proposal number (equal numbers form one logical AND proposal).
    pub number: u8,
    /// Protocol.
    pub protocol: ProtocolId,
    /// SPI (empty or 16 bytes in Phase 1, 4 bytes for ESP).
    pub spi: &'a [u8],
    /// Transforms, alternatives in order of preference.
    pub transforms: Vec<Transform<'a>>,
}

/// A Security Association payload of the IPsec DOI (RFC 2408 §3.4, RFC 2407 §4.6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityAssociation<'a> {
    /// Situation (SIT_IDENTITY_ONLY).
    pub situation: u32,
    /// Proposals.
    pub proposals: Vec<Proposal<'a>>,
}

/// An identification payload of the IPsec DOI (RFC 2407 §4.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identification<'a> {
    /// ID type.
    pub id_type: IdType,
    /// IP protocol (0 for any; 17 with port 500 in Phase 1 is also seen).
    pub protocol: u8,
    /// Port (0 for any).
    pub port: u16,
    /// Identification data.
    pub data: &'a [u8],
}

/// A notification payload (RFC 2408 §3.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification<'a> {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol the SPI belongs to.
    pub protocol: u8,
    /// Notify message type.
    pub ty: NotifyType,
    /// SPI (cookies for ISAKMP, 4 bytes for ESP, or empty).
    pub spi: &'a [u8],
    /// Notification data.
    pub data: &'a [u8],
}

/// A delete payload (RFC 2408 §3.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete<'a> {
    /// Domain of interpretation.
    pub doi: u32,
    /// Protocol of the SPIs.
    pub protocol: ProtocolId,
    /// The SPIs, each of the same size.
    pub spis: Vec<&'a [u8]>,
}

/// A NAT original address payload (RFC 3947 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatOriginalAddress<'a> {
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    pub id_type: IdType,
    /// The address, 4 or 16 bytes.
    pub address: &'a [u8],
}

registry!(
    /// Attribute payload message types (draft-dukes-ike-mode-cfg §3.2).
    ConfigType(u8) {
        /// ISAKMP_CFG_REQUEST
        REQUEST = 1,
        /// ISAKMP_CFG_REPLY
        REPLY = 2,
        /// ISAKMP_CFG_SET
        SET = 3,
        /// ISAKMP_CFG_ACK
        ACK = 4,
    }
);

/// An attribute payload of Mode Config and XAUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigAttributes<'a> {
    /// Request, reply, set or ack.
    pub ty: ConfigType,
    /// Identifier matching a reply to its request.
    pub identifier: u16,
    /// The attributes.
    pub attributes: Vec<Attribute<'a>>,
}

/// One decoded ISAKMP payload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload<'a> {
    /// Security Association.
    Sa(SecurityAssociation<'a>),
    /// Key exchange data.
    Ke(&'a [u8]),
    /// Identification.
    Id(Identification<'a>),
    /// Certificate: encoding and data.
    Cert {
        /// Certificate encoding (4 = X.509 signature).
        encoding: u8,
        /// The certificate.
        data: &'a [u8],
    },
    /// Certificate request: type and certificate authority.
    CertReq {
        /// Certificate type.
        cert_type: u8,
        /// DER name of an acceptable authority, or empty.
        authority: &'a [u8],
    },
    /// Hash data.
    Hash(&'a [u8]),
    /// Signature data.
    Sig(&'a [u8]),
    /// Nonce data.
    Nonce(&'a [u8]),
    /// Notification.
    Notify(Notification<'a>),
    /// Delete.
    Delete(Delete<'a>),
    /// Vendor ID.
    VendorId(&'a [u8]),
    /// Mode Config / XAUTH attributes.
    Attributes(ConfigAttributes<'a>),
    /// NAT discovery hash (RFC 3947 or the drafts' type number).
    NatD(&'a [u8]),
    /// NAT original address.
    NatOa(NatOriginalAddress<'a>),
}

impl Payload<'_> {
    /// The payload type this payload is sent as.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::Id(_) => PayloadType::ID,
            Payload::Cert { .. } => PayloadType::CERT,
            Payload::CertReq { .. } => PayloadType::CERTREQ,
            Payload::Hash(_) => PayloadType::HASH,
            Payload::Sig(_) => PayloadType::SIG,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::Attributes(_) => PayloadType::ATTRIBUTE,
            Payload::NatD(_) => PayloadType::NAT_D,
            Payload::NatOa(_) => PayloadType::NAT_OA,
        }
    }
}

/// A decoded ISAKMP message: header and payload chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header.
    pub header: Header,
    /// The payloads, in order.
    pub payloads: Vec<Payload<'a>>,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:016x}/{:016x} mid {} flags {:#04x}",
            self.exchange, self.cookie_i, self.cookie_r, self.message_id, self.flags
        )
    }
}
