//! IKEv2 header, payload structures and IANA registries (RFC 7296 §3).

use std::fmt;
use std::net::IpAddr;

/// Length of the fixed IKE header.
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header.
pub const GENERIC_PAYLOAD_HEADER_LEN: usize = 4;

macro_rules! registry {
    ($(#[$m:meta])* $name:ident($repr:ty) { $($(#[$vm:meta])* $c:ident = $v:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $repr);
        impl $name {
            $($(#[$vm])* pub const $c: Self = Self($v);)*
            /// The registry name of this value, if it is a known one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 { $($v => Some(stringify!($c)),)* _ => None }
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() { Some(n) => f.write_str(n), None => write!(f, "{}({})", stringify!($name), self.0) }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { fmt::Debug::fmt(self, f) }
        }
    };
}

pub(crate) use registry;

registry!(
    /// Exchange types (RFC 7296 §3.1).
    ExchangeType(u8) {
        /// IKE_SA_INIT
        IKE_SA_INIT = 34,
        /// IKE_AUTH
        IKE_AUTH = 35,
        /// CREATE_CHILD_SA
        CREATE_CHILD_SA = 36,
        /// INFORMATIONAL
        INFORMATIONAL = 37,
        /// IKE_INTERMEDIATE (RFC 9242)
        IKE_INTERMEDIATE = 43,
        /// IKE_FOLLOWUP_KE (RFC 9370)
        IKE_FOLLOWUP_KE = 44,
    }
);

registry!(
    /// Payload types (RFC 7296 §3.2, RFC 7383).
    PayloadType(u8) {
        /// No next payload.
        NONE = 0,
        /// Security Association
        SA = 33,
        /// Key Exchange
        KE = 34,
        /// Identification - Initiator
        IDI = 35,
        /// Identification - Responder
        IDR = 36,
        /// Certificate
        CERT = 37,
        /// Certificate Request
        CERTREQ = 38,
        /// Authentication
        AUTH = 39,
        /// Nonce
        NONCE = 40,
        /// Notify
        NOTIFY = 41,
        /// Delete
        DELETE = 42,
        /// Vendor ID
        VENDOR_ID = 43,
        /// Traffic Selector - Initiator
        TSI = 44,
        /// Traffic Selector - Responder
        TSR = 45,
        /// Encrypted and Authenticated
        SK = 46,
        /// Configuration
        CP = 47,
        /// Extensible Authentication
        EAP = 48,
        /// Encrypted and Authenticated Fragment (RFC 7383)
        SKF = 53,
    }
);

registry!(
    /// Protocol IDs in proposals, notifies and deletes.
    ProtocolId(u8) {
        /// Not applicable / none.
        NONE = 0,
        /// IKE
        IKE = 1,
        /// AH
        AH = 2,
        /// ESP
        ESP = 3,
    }
);

registry!(
    /// Transform types (RFC 7296 §3.3.2, RFC 9370).
    TransformType(u8) {
        /// Encryption algorithm
        ENCR = 1,
        /// Pseudo-random function
        PRF = 2,
        /// Integrity algorithm
        INTEG = 3,
        /// Key exchange method (Diffie-Hellman group)
        KE = 4,
        /// Extended sequence numbers
        ESN = 5,
        /// Additional key exchange 1 (RFC 9370)
        ADDKE1 = 6,
        /// Additional key exchange 2 (RFC 9370)
        ADDKE2 = 7,
    }
);

registry!(
    /// Notify message types (RFC 7296 §3.10.1 and extensions).
    NotifyType(u16) {
        /// UNSUPPORTED_CRITICAL_PAYLOAD
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        /// INVALID_IKE_SPI
        INVALID_IKE_SPI = 4,
        /// INVALID_MAJOR_VERSION
        INVALID_MAJOR_VERSION = 5,
        /// INVALID_SYNTAX
        INVALID_SYNTAX = 7,
        /// INVALID_MESSAGE_ID
        INVALID_MESSAGE_ID = 9,
        /// INVALID_SPI
        INVALID_SPI = 11,
        /// NO_PROPOSAL_CHOSEN
        NO_PROPOSAL_CHOSEN = 14,
        /// INVALID_KE_PAYLOAD
        INVALID_KE_PAYLOAD = 17,
        /// AUTHENTICATION_FAILED
        AUTHENTICATION_FAILED = 24,
        /// SINGLE_PAIR_REQUIRED
        SINGLE_PAIR_REQUIRED = 34,
        /// NO_ADDITIONAL_SAS
        NO_ADDITIONAL_SAS = 35,
        /// INTERNAL_ADDRESS_FAILURE
        INTERNAL_ADDRESS_FAILURE = 36,
        /// FAILED_CP_REQUIRED
        FAILED_CP_REQUIRED = 37,
        /// TS_UNACCEPTABLE
        TS_UNACCEPTABLE = 38,
        /// INVALID_SELECTORS
        INVALID_SELECTORS = 39,
        /// UNACCEPTABLE_ADDRESSES (RFC 4555)
        UNACCEPTABLE_ADDRESSES = 40,
        /// UNEXPECTED_NAT_DETECTED (RFC 4555)
        UNEXPECTED_NAT_DETECTED = 41,
        /// TEMPORARY_FAILURE
        TEMPORARY_FAILURE = 43,
        /// CHILD_SA_NOT_FOUND
        CHILD_SA_NOT_FOUND = 44,
        /// STATE_NOT_FOUND (RFC 9370): no IKE_FOLLOWUP_KE state for the link
        STATE_NOT_FOUND = 47,
        /// INITIAL_CONTACT
        INITIAL_CONTACT = 16384,
        /// SET_WINDOW_SIZE
        SET_WINDOW_SIZE = 16385,
        /// ADDITIONAL_TS_POSSIBLE
        ADDITIONAL_TS_POSSIBLE = 16386,
        /// IPCOMP_SUPPORTED
        IPCOMP_SUPPORTED = 16387,
        /// NAT_DETECTION_SOURCE_IP
        NAT_DETECTION_SOURCE_IP = 16388,
        /// NAT_DETECTION_DESTINATION_IP
        NAT_DETECTION_DESTINATION_IP = 16389,
        /// COOKIE
        COOKIE = 16390,
        /// USE_TRANSPORT_MODE
        USE_TRANSPORT_MODE = 16391,
        /// HTTP_CERT_LOOKUP_SUPPORTED
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        /// REKEY_SA
        REKEY_SA = 16393,
        /// ESP_TFC_PADDING_NOT_SUPPORTED
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        /// NON_FIRST_FRAGMENTS_ALSO
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        /// MOBIKE_SUPPORTED (RFC 4555)
        MOBIKE_SUPPORTED = 16396,
        /// ADDITIONAL_IP4_ADDRESS (RFC 4555)
        ADDITIONAL_IP4_ADDRESS = 16397,
        /// ADDITIONAL_IP6_ADDRESS (RFC 4555)
        ADDITIONAL_IP6_ADDRESS = 16398,
        /// NO_ADDITIONAL_ADDRESSES (RFC 4555)
        NO_ADDITIONAL_ADDRESSES = 16399,
        /// UPDATE_SA_ADDRESSES (RFC 4555)
        UPDATE_SA_ADDRESSES = 16400,
        /// COOKIE2 (RFC 4555): return routability check
        COOKIE2 = 16401,
        /// NO_NATS_ALLOWED (RFC 4555)
        NO_NATS_ALLOWED = 16402,
        /// MULTIPLE_AUTH_SUPPORTED (RFC 4739)
        MULTIPLE_AUTH_SUPPORTED = 16404,
        /// ANOTHER_AUTH_FOLLOWS (RFC 4739)
        ANOTHER_AUTH_FOLLOWS = 16405,
        /// REDIRECT_SUPPORTED (RFC 5685)
        REDIRECT_SUPPORTED = 16406,
        /// REDIRECT (RFC 5685): the gateway to go to instead
        REDIRECT = 16407,
        /// REDIRECTED_FROM (RFC 5685): the gateway that redirected us
        REDIRECTED_FROM = 16408,
        /// EAP_ONLY_AUTHENTICATION (RFC 5998)
        EAP_ONLY_AUTHENTICATION = 16417,
        /// CHILDLESS_IKEV2_SUPPORTED (RFC 6023)
        CHILDLESS_IKEV2_SUPPORTED = 16418,
        /// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        /// SIGNATURE_HASH_ALGORITHMS (RFC 7427)
        SIGNATURE_HASH_ALGORITHMS = 16431,
        /// USE_PPK (RFC 8784): postquantum preshared keys supported
        USE_PPK = 16435,
        /// PPK_IDENTITY (RFC 8784): the PPK_ID of the key used
        PPK_IDENTITY = 16436,
        /// NO_PPK_AUTH (RFC 8784): the AUTH value computed without the PPK
        NO_PPK_AUTH = 16437,
        /// INTERMEDIATE_EXCHANGE_SUPPORTED (RFC 9242)
        INTERMEDIATE_EXCHANGE_SUPPORTED = 16438,
        /// ADDITIONAL_KEY_EXCHANGE (RFC 9370): links IKE_FOLLOWUP_KE exchanges
        ADDITIONAL_KEY_EXCHANGE = 16441,
    }
);

impl NotifyType {
    /// Notify types below 16384 report errors (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

registry!(
    /// Identification types (RFC 7296 §3.5).
    IdType(u8) {
        /// ID_IPV4_ADDR
        IPV4_ADDR = 1,
        /// ID_FQDN
        FQDN = 2,
        /// ID_RFC822_ADDR
        RFC822_ADDR = 3,
        /// ID_IPV6_ADDR
        IPV6_ADDR = 5,
        /// ID_DER_ASN1_DN
        DER_ASN1_DN = 9,
        /// ID_DER_ASN1_GN
        DER_ASN1_GN = 10,
        /// ID_KEY_ID
        KEY_ID = 11,
    }
);

registry!(
    /// Authentication methods (RFC 7296 §3.8, RFC 7427).
    AuthMethod(u8) {
        /// RSA Digital Signature (PKCS#1 v1.5, SHA-1)
        RSA_SIG = 1,
        /// Shared Key Message Integrity Code
        SHARED_KEY_MIC = 2,
        /// DSS Digital Signature
        DSS_SIG = 3,
        /// ECDSA with SHA-256 on P-256 (RFC 4754)
        ECDSA_SHA256_P256 = 9,
        /// ECDSA with SHA-384 on P-384 (RFC 4754)
        ECDSA_SHA384_P384 = 10,
        /// ECDSA with SHA-512 on P-521 (RFC 4754)
        ECDSA_SHA512_P521 = 11,
        /// Digital Signature (RFC 7427)
        DIGITAL_SIGNATURE = 14,
    }
);

registry!(
    /// Certificate encodings (RFC 7296 §3.6).
    CertEncoding(u8) {
        /// X.509 Certificate - Signature
        X509_SIGNATURE = 4,
        /// Hash and URL of X.509 certificate
        HASH_AND_URL_X509 = 12,
    }
);

registry!(
    /// Traffic selector types (RFC 7296 §3.13.1).
    TsType(u8) {
        /// TS_IPV4_ADDR_RANGE
        IPV4_ADDR_RANGE = 7,
        /// TS_IPV6_ADDR_RANGE
        IPV6_ADDR_RANGE = 8,
    }
);

registry!(
    /// Configuration payload types (RFC 7296 §3.15).
    CfgType(u8) {
        /// CFG_REQUEST
        REQUEST = 1,
        /// CFG_REPLY
        REPLY = 2,
        /// CFG_SET
        SET = 3,
        /// CFG_ACK
        ACK = 4,
    }
);

/// Header flag: the sender is the original initiator of the IKE SA.
pub const FLAG_INITIATOR: u8 = 0x08;
/// Header flag: the sender can speak a higher major version.
pub const FLAG_VERSION: u8 = 0x10;
/// Header flag: this message is a response.
pub const FLAG_RESPONSE: u8 = 0x20;

/// The fixed IKE header (RFC 7296 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Major version (2).
    pub major_version: u8,
    /// Minor version (0).
    pub minor_version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags: [`FLAG_INITIATOR`], [`FLAG_VERSION`], [`FLAG_RESPONSE`].
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Total length of the message including the header.
    pub length: u32,
}

impl Header {
    /// True if the Response flag is set.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    /// True if the Initiator flag is set.
    pub fn is_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }
}

/// One attribute of a transform (RFC 7296 §3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransformAttribute {
    /// Key Length in bits (attribute type 14, TV format).
    KeyLength(u16),
    /// Any other attribute: type (without the AF bit) and value. `tv` tells the format.
    Other {
        /// Attribute type (15 bits).
        ty: u16,
        /// True for TV (2-byte value in the header), false for TLV.
        tv: bool,
        /// The value.
        value: Vec<u8>,
    },
}

/// One transform of a proposal (RFC 7296 §3.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    /// Transform type.
    pub ty: TransformType,
    /// Transform ID within the type's registry.
    pub id: u16,
    /// Attributes, usually none or a key length.
    pub attributes: Vec<TransformAttribute>,
}

impl Transform {
    /// The Key Length attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            TransformAttribute::KeyLength(k) => Some(*k),
            _ => None,
        })
    }
    /// True if the transform carries attributes other than Key Length (it must then be rejected).
    pub fn has_unknown_attributes(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| !matches!(a, TransformAttribute::KeyLength(_)))
    }
}

/// One proposal of an SA payload (RFC 7296 §3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (1-based, consecutive).
    pub number: u8,
    /// Protocol (IKE, ESP, AH).
    pub protocol: ProtocolId,
    /// SPI: empty in the first IKE_SA_INIT, 8 bytes for IKE rekey, 4 bytes for ESP/AH.
    pub spi: Vec<u8>,
    /// The transforms.
    pub transforms: Vec<Transform>,
}

/// Identification payload body (RFC 7296 §3.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identification {
    /// ID type.
    pub id_type: IdType,
    /// Identification data.
    pub data: Vec<u8>,
}

/// Notify payload (RFC 7296 §3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// Protocol the SPI belongs to (NONE when no SPI).
    pub protocol: ProtocolId,
    /// SPI (empty, or 4/8 bytes).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub ty: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

/// Delete payload (RFC 7296 §3.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    /// Protocol of the SAs deleted.
    pub protocol: ProtocolId,
    /// SPI size (0 for IKE, 4 for ESP/AH).
    pub spi_size: u8,
    /// SPIs, each `spi_size` bytes.
    pub spis: Vec<Vec<u8>>,
}

/// One traffic selector (RFC 7296 §3.13.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol (0 = any).
    pub ip_protocol: u8,
    /// Start port.
    pub start_port: u16,
    /// End port.
    pub end_port: u16,
    /// Start address; its family decides TS_IPV4_ADDR_RANGE or TS_IPV6_ADDR_RANGE.
    pub start_addr: IpAddr,
    /// End address; same family as `start_addr`.
    pub end_addr: IpAddr,
}

/// One attribute of a configuration payload (RFC 7296 §3.15.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigAttribute {
    /// Attribute type (15 bits).
    pub ty: u16,
    /// Value (may be empty in requests).
    pub value: Vec<u8>,
}

/// Any IKEv2 payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(Vec<Proposal>),
    /// Key Exchange: group and public value.
    Ke {
        /// Key exchange method number.
        group: u16,
        /// Public value.
        data: Vec<u8>,
    },
    /// Identification - Initiator.
    IdI(Identification),
    /// Identification - Responder.
    IdR(Identification),
    /// Certificate.
    Cert {
        /// Encoding.
        encoding: CertEncoding,
        /// Certificate data (DER for X509_SIGNATURE).
        data: Vec<u8>,
    },
    /// Certificate Request.
    CertReq {
        /// Encoding.
        encoding: CertEncoding,
        /// Concatenated 20-byte SHA-1 hashes of CA public keys.
        data: Vec<u8>,
    },
    /// Authentication.
    Auth {
        /// Method.
        method: AuthMethod,
        /// Authentication data.
        data: Vec<u8>,
    },
    /// Nonce.
    Nonce(Vec<u8>),
    /// Notify.
    Notify(Notify),
    /// Delete.
    Delete(Delete),
    /// Vendor ID.
    VendorId(Vec<u8>),
    /// Traffic Selectors - Initiator.
    TsI(Vec<TrafficSelector>),
    /// Traffic Selectors - Responder.
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated, still protected: the type of the first
    /// inner payload, and the body (IV || ciphertext || ICV).
    Sk {
        /// Next-payload field of the SK payload: the first inner payload's type.
        first_inner: PayloadType,
        /// IV, ciphertext and ICV.
        body: Vec<u8>,
    },
    /// Encrypted Fragment (RFC 7383), still protected.
    Skf {
        /// First inner payload type (non-zero only in fragment 1).
        first_inner: PayloadType,
        /// Fragment number, 1-based.
        number: u16,
        /// Total fragments.
        total: u16,
        /// IV, ciphertext and ICV.
        body: Vec<u8>,
    },
    /// Configuration.
    Cp {
        /// CFG type.
        cfg_type: CfgType,
        /// Attributes.
        attributes: Vec<ConfigAttribute>,
    },
    /// EAP message (opaque).
    Eap(Vec<u8>),
    /// A payload type we do not know. Kept so that it can be reported.
    Unknown {
        /// Its type.
        ty: PayloadType,
        /// Its critical bit.
        critical: bool,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type number of this payload.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke { .. } => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Cert { .. } => PayloadType::CERT,
            Payload::CertReq { .. } => PayloadType::CERTREQ,
            Payload::Auth { .. } => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Sk { .. } => PayloadType::SK,
            Payload::Skf { .. } => PayloadType::SKF,
            Payload::Cp { .. } => PayloadType::CP,
            Payload::Eap(_) => PayloadType::EAP,
            Payload::Unknown { ty, .. } => *ty,
        }
    }
}
