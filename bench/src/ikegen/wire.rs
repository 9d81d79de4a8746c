//! Datagram helpers of the generator: the non-ESP marker, a cheap look at
//! responses (cookie? rejection?) without a full decode, and the pre-built
//! IKE_SA_INIT requests of a flood.

use std::net::SocketAddr;

use control::crypto::KeyExchange;
use control::ike_sa::notify_payload;
use control::nat::nat_detection_hash;
use control::proposal::IkeProposal;
use control::wire::ikev2::{self, ExchangeType, FLAG_INITIATOR, HEADER_LEN, Header, NotifyType, Payload, PayloadType};
use ironsa_crypto::{AwsLcProvider, RandomSource, SystemRandom};

use super::options::ConfigError;

/// The 4-byte non-ESP marker of RFC 3948.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// Strips a leading non-ESP marker (four zero bytes); IKE headers never start
/// with them because the initiator SPI is never zero.
pub fn strip_marker(datagram: &[u8]) -> &[u8] {
    match datagram {
        [0, 0, 0, 0, rest @ ..] => rest,
        other => other,
    }
}

/// What a response to an IKE_SA_INIT request says, read from its first payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitResponse {
    /// The responder demands a COOKIE.
    Cookie,
    /// The responder asks for another key exchange group.
    InvalidKe,
    /// An error notify (NO_PROPOSAL_CHOSEN, ...).
    Rejected(NotifyType),
    /// A real response: the responder keeps half-open state.
    Accepted,
}

/// Classifies an IKE_SA_INIT response (marker already stripped); None for anything else.
pub fn classify_init_response(d: &[u8]) -> Option<InitResponse> {
    if d.len() < HEADER_LEN || d[18] != ExchangeType::IKE_SA_INIT.0 || d[19] & ikev2::FLAG_RESPONSE == 0 {
        return None;
    }
    if d[16] == PayloadType::NOTIFY.0 && d.len() >= HEADER_LEN + 8 {
        let ty = NotifyType(u16::from_be_bytes([d[HEADER_LEN + 6], d[HEADER_LEN + 7]]));
        return Some(match ty {
            NotifyType::COOKIE => InitResponse::Cookie,
            NotifyType::INVALID_KE_PAYLOAD => InitResponse::InvalidKe,
            t if t.is_error() => InitResponse::Rejected(t),
            _ => InitResponse::Accepted,
        });
    }
    Some(InitResponse::Accepted)
}

/// Random bytes from aws-lc-rs, fetched in large blocks.
pub struct RandomPool {
    buf: Vec<u8>,
    pos: usize,
}

impl RandomPool {
    /// An empty pool (filled on first use).
    pub fn new() -> Self {
        Self {
            buf: vec![0; 64 * 1024],
            pos: usize::MAX,
        }
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), ConfigError> {
        if out.len() > self.buf.len() {
            return SystemRandom
                .fill(out)
                .map_err(|e| ConfigError::Invalid(format!("random: {e}")));
        }
        if self.pos.saturating_add(out.len()) > self.buf.len() {
            SystemRandom
                .fill(&mut self.buf)
                .map_err(|e| ConfigError::Invalid(format!("random: {e}")))?;
            self.pos = 0;
        }
        out.copy_from_slice(&self.buf[self.pos..self.pos + out.len()]);
        self.pos += out.len();
        Ok(())
    }
}

impl Default for RandomPool {
    fn default() -> Self {
        Self::new()
    }
}

const NONCE_FILL: u8 = 0xa5;
const NAT_SRC_FILL: u8 = 0x5a;
const NAT_DST_FILL: u8 = 0x3c;

/// An IKE_SA_INIT request template for floods: one key exchange public value
/// (computed once and reused, which costs the responder the same work as a
/// fresh one), a fresh random SPI and nonce and correct NAT detection hashes per packet.
pub struct FloodPacket {
    template: Vec<u8>,
    nonce_at: usize,
    nonce_len: usize,
    nat_src_at: usize,
    nat_dst_at: usize,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl FloodPacket {
    /// Builds the template for these proposals.
    pub fn new(proposals: &[IkeProposal]) -> Result<Self, ConfigError> {
        let group = proposals
            .first()
            .and_then(|p| p.ke.first().copied())
            .ok_or_else(|| ConfigError::Invalid("flood: no key exchange group in the IKE proposals".into()))?;
        let ke = KeyExchange::generate(&AwsLcProvider::new(), group)
            .map_err(|e| ConfigError::Invalid(format!("flood: key exchange: {e}")))?;
        let nonce_len = 32;
        let sa = proposals
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire((i + 1) as u8, &[]))
            .collect();
        let payloads = vec![
            Payload::Sa(sa),
            Payload::Ke {
                group: group.number(),
                data: ke.public_value().to_vec(),
            },
            Payload::Nonce(vec![NONCE_FILL; nonce_len]),
            notify_payload(NotifyType::NAT_DETECTION_SOURCE_IP, vec![NAT_SRC_FILL; 20]),
            notify_payload(NotifyType::NAT_DETECTION_DESTINATION_IP, vec![NAT_DST_FILL; 20]),
        ];
        let header = Header {
            spi_i: 1,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            message_id: 0,
            length: 0,
        };
        let template = ikev2::encode_message(&header, &payloads);
        let missing = || ConfigError::Invalid("flood: cannot locate fields in the IKE_SA_INIT template".into());
        let nonce_at = find(&template, &[NONCE_FILL; 32]).ok_or_else(missing)?;
        let nat_src_at = find(&template, &[NAT_SRC_FILL; 20]).ok_or_else(missing)?;
        let nat_dst_at = find(&template, &[NAT_DST_FILL; 20]).ok_or_else(missing)?;
        Ok(Self {
            template,
            nonce_at,
            nonce_len,
            nat_src_at,
            nat_dst_at,
        })
    }

    /// Writes a request from `local` to `remote` into `out` (with the marker if `marker`).
    pub fn write(
        &self,
        rng: &mut RandomPool,
        local: SocketAddr,
        remote: SocketAddr,
        marker: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), ConfigError> {
        out.clear();
        if marker {
            out.extend_from_slice(&NON_ESP_MARKER);
        }
        let base = out.len();
        out.extend_from_slice(&self.template);
        let mut spi = [0u8; 8];
        loop {
            rng.fill(&mut spi)?;
            if spi != [0; 8] {
                break;
            }
        }
        let spi_i = u64::from_be_bytes(spi);
        out[base..base + 8].copy_from_slice(&spi);
        rng.fill(&mut out[base + self.nonce_at..base + self.nonce_at + self.nonce_len])?;
        out[base + self.nat_src_at..base + self.nat_src_at + 20].copy_from_slice(&nat_detection_hash(spi_i, 0, local));
        out[base + self.nat_dst_at..base + self.nat_dst_at + 20].copy_from_slice(&nat_detection_hash(spi_i, 0, remote));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::proposal::parse_ike_proposals;

    #[test]
    fn flood_packets_decode_and_differ() {
        let p = FloodPacket::new(&parse_ike_proposals("aes256gcm16-prfsha256-x25519").unwrap()).unwrap();
        let mut rng = RandomPool::new();
        let (l, r) = ("127.0.1.1:4000".parse().unwrap(), "127.0.0.1:500".parse().unwrap());
        let mut a = Vec::new();
        let mut b = Vec::new();
        p.write(&mut rng, l, r, true, &mut a).unwrap();
        p.write(&mut rng, l, r, true, &mut b).unwrap();
        assert_eq!(&a[..4], &NON_ESP_MARKER);
        let ma = ikev2::decode_message(strip_marker(&a)).unwrap();
        let mb = ikev2::decode_message(strip_marker(&b)).unwrap();
        assert_ne!(ma.header.spi_i, mb.header.spi_i);
        let nonce = |m: &ikev2::Message| {
            m.payloads.iter().find_map(|p| match p {
                Payload::Nonce(n) => Some(n.clone()),
                _ => None,
            })
        };
        assert_ne!(nonce(&ma), nonce(&mb));
        let nat = ma.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.ty == NotifyType::NAT_DETECTION_SOURCE_IP => Some(n.data.clone()),
            _ => None,
        });
        assert_eq!(nat, Some(nat_detection_hash(ma.header.spi_i, 0, l).to_vec()));
    }

    #[test]
    fn classifies_cookie_responses() {
        let header = Header {
            spi_i: 7,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            major_version: 2,
            minor_version: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: ikev2::FLAG_RESPONSE,
            message_id: 0,
            length: 0,
        };
        let cookie = ikev2::encode_message(&header, &[notify_payload(NotifyType::COOKIE, vec![1; 16])]);
        assert_eq!(classify_init_response(&cookie), Some(InitResponse::Cookie));
        let npc = ikev2::encode_message(&header, &[notify_payload(NotifyType::NO_PROPOSAL_CHOSEN, vec![])]);
        assert_eq!(
            classify_init_response(&npc),
            Some(InitResponse::Rejected(NotifyType::NO_PROPOSAL_CHOSEN))
        );
        assert_eq!(classify_init_response(&[0u8; 10]), None);
        assert_eq!(strip_marker(&[0, 0, 0, 0, 1]), &[1]);
        assert_eq!(strip_marker(&[1, 0, 0, 0, 1]), &[1, 0, 0, 0, 1]);
    }
}
