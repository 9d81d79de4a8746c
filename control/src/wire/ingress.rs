//! What a datagram received on an IKE port is, from its first bytes: the
//! one place that reads SPIs, version, exchange type and flags before a full
//! decode, so that the daemon's shards and its data planes route a datagram
//! to the owner of its SPI without decoding it, and the owner decodes it once.

use super::ikev2::{ExchangeType, HEADER_LEN, Header, PayloadType};

/// Length of the non-ESP marker that precedes IKE on the NAT-T port (RFC 3948 §2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;
/// The single byte of a NAT keepalive (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: u8 = 0xff;

/// Shortest ESP packet: SPI and sequence number (RFC 4303 §2).
const ESP_HEADER_LEN: usize = 8;

/// The IKE major version of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IkeVersion {
    /// ISAKMP / IKEv1 (major version 1).
    V1,
    /// IKEv2 (major version 2).
    V2,
    /// Any other major version.
    Other(u8),
}

/// A received datagram, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// An IKE message (of any version): its header, read without checks
    /// beyond its length, and where the message starts in the datagram.
    Ike {
        /// The header fields as sent.
        header: Header,
        /// Bytes before the message: the non-ESP marker's 4, or 0.
        offset: usize,
    },
    /// ESP in UDP (RFC 3948): on the NAT-T port, anything else of 8 bytes or more.
    Esp {
        /// The ESP SPI.
        spi: u32,
    },
    /// A NAT-keepalive (a single 0xff byte, RFC 3948 §2.3).
    NatKeepalive,
    /// Too short to be an IKE message (or ESP packet).
    Runt,
}

impl Header {
    /// The IKE major version.
    pub fn version(&self) -> IkeVersion {
        match self.major_version {
            1 => IkeVersion::V1,
            2 => IkeVersion::V2,
            n => IkeVersion::Other(n),
        }
    }

    /// The SPI the recipient of this message chose: the responder's in a
    /// message from the original initiator, else the initiator's. Zero in a
    /// first IKE_SA_INIT request, where the responder has not chosen one yet.
    pub fn recipient_spi(&self) -> u64 {
        if self.is_initiator() { self.spi_r } else { self.spi_i }
    }
}

/// Reads the 28-byte IKE header at the start of `message` without judging
/// its version or length field; `None` if the message is shorter.
pub fn peek_header(message: &[u8]) -> Option<Header> {
    let h: &[u8; HEADER_LEN] = message.get(..HEADER_LEN)?.try_into().ok()?;
    let be64 = |at: usize| {
        u64::from_be_bytes([
            h[at],
            h[at + 1],
            h[at + 2],
            h[at + 3],
            h[at + 4],
            h[at + 5],
            h[at + 6],
            h[at + 7],
        ])
    };
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    Some(Header {
        spi_i: be64(0),
        spi_r: be64(8),
        next_payload: PayloadType(h[16]),
        major_version: h[17] >> 4,
        minor_version: h[17] & 0x0f,
        exchange: ExchangeType(h[18]),
        flags: h[19],
        message_id: be32(20),
        length: be32(24),
    })
}

/// Classifies a datagram received on an IKE port. On the NAT-T port
/// (`nat_t`) IKE follows a non-ESP marker and anything else is ESP; on port
/// 500 everything is IKE, a marker tolerated (an initiator's SPI is never
/// zero, so four zero bytes cannot start an IKE header there).
pub fn classify(datagram: &[u8], nat_t: bool) -> Ingress {
    if nat_t && datagram == [NAT_KEEPALIVE] {
        return Ingress::NatKeepalive;
    }
    let marked = datagram.len() >= NON_ESP_MARKER_LEN && datagram[..NON_ESP_MARKER_LEN] == [0; NON_ESP_MARKER_LEN];
    if nat_t && !marked {
        return match datagram.get(..ESP_HEADER_LEN) {
            Some(h) => Ingress::Esp {
                spi: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
            },
            None => Ingress::Runt,
        };
    }
    let offset = if marked { NON_ESP_MARKER_LEN } else { 0 };
    match peek_header(&datagram[offset..]) {
        Some(header) => Ingress::Ike { header, offset },
        None => Ingress::Runt,
    }
}
