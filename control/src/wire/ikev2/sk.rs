//! The Encrypted payload (SK, RFC 7296 §3.14) and Encrypted Fragments
//! (SKF, RFC 7383).

use std::fmt;

use zeroize::Zeroizing;

use super::Message;
use super::codec::{decode_message, decode_payloads, encode_capacity, try_encode_payloads, write_header};
use super::types::*;
use crate::wire::WireError;

/// Most fragments [`FragmentReassembler`] accepts for one message.
pub const MAX_FRAGMENTS: u16 = 64;
/// Most plaintext bytes [`FragmentReassembler`] collects for one message.
pub const MAX_REASSEMBLED_LEN: usize = 64 * 1024;
/// Bytes of the SKF Fragment Number and Total Fragments fields.
const SKF_FIELDS_LEN: usize = 4;

/// The negotiated protection of SK payloads in one direction pair, implemented
/// by the crypto module (AEAD or CBC + HMAC).
///
/// `seal` and `open` receive the associated data (the IKE header and the SK/SKF
/// payload header, plus for SKF the fragment number/total fields), the IV, the
/// padded plaintext/ciphertext in place, and the ICV. An AEAD authenticates
/// `aad` and encrypts `data`; CBC + HMAC encrypts `data` and MACs
/// `aad || iv || data` (RFC 7296 §3.14: the checksum covers the message from
/// the IKE header to the end of the ciphertext).
pub trait SkProtect {
    /// IV length in bytes (8 for AES-GCM and ChaCha20-Poly1305, 16 for AES-CBC).
    fn iv_len(&self) -> usize;
    /// ICV length in bytes.
    fn icv_len(&self) -> usize;
    /// Padding alignment of the plaintext (16 for AES-CBC, 1 for AEADs).
    fn block_len(&self) -> usize;
    /// Encrypts `data` in place, fills a fresh `iv` and writes the `icv`.
    fn seal(&self, aad: &[u8], iv: &mut [u8], data: &mut [u8], icv: &mut [u8]) -> Result<(), WireError>;
    /// Checks the ICV and decrypts `data` in place.
    fn open(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &[u8]) -> Result<(), WireError>;
}

/// Checks the transform's sizes so that the arithmetic below cannot overflow.
fn block_len(sk: &dyn SkProtect) -> Result<usize, WireError> {
    let block = sk.block_len().max(1);
    if block > 256 || sk.iv_len() > 256 || sk.icv_len() > 256 {
        return Err(WireError::Invalid {
            what: "SK transform",
            detail: format!("block {block}, IV {} or ICV {} too large", sk.iv_len(), sk.icv_len()),
        });
    }
    Ok(block)
}

/// Bytes of padding so that `len + padding + 1` is a multiple of `block`.
fn pad_len(len: usize, block: usize) -> usize {
    (block - (len + 1) % block) % block
}

/// Appends one encrypted payload (SK, or SKF when `fragment` is given) to
/// `out`, which already holds the IKE header (and nothing else), and seals it.
fn seal_payload(
    out: &mut Vec<u8>,
    next: PayloadType,
    fragment: Option<(u16, u16)>,
    plain: &[u8],
    sk: &dyn SkProtect,
) -> Result<(), WireError> {
    let block = block_len(sk)?;
    let padding = pad_len(plain.len(), block);
    let start = out.len();
    let fields = if fragment.is_some() { SKF_FIELDS_LEN } else { 0 };
    let len = GENERIC_PAYLOAD_HEADER_LEN + fields + sk.iv_len() + plain.len() + padding + 1 + sk.icv_len();
    let len16 = u16::try_from(len).map_err(|_| WireError::TooLarge(len))?;
    out.extend_from_slice(&[next.0, 0]);
    out.extend_from_slice(&len16.to_be_bytes());
    if let Some((number, total)) = fragment {
        out.extend_from_slice(&number.to_be_bytes());
        out.extend_from_slice(&total.to_be_bytes());
    }
    let aad_len = out.len();
    out.resize(aad_len + sk.iv_len(), 0);
    out.extend_from_slice(plain);
    out.resize(out.len() + padding, 0);
    // padding <= 255 because block <= 256.
    out.push(u8::try_from(padding).map_err(|_| WireError::TooLarge(padding))?);
    out.resize(out.len() + sk.icv_len(), 0);
    debug_assert_eq!(out.len() - start, len);
    let (aad, rest) = out.split_at_mut(aad_len);
    let (iv, rest) = rest.split_at_mut(sk.iv_len());
    let data_len = rest.len() - sk.icv_len();
    let (data, icv) = rest.split_at_mut(data_len);
    sk.seal(aad, iv, data, icv)
}

/// Verifies and decrypts the encrypted payload that ends `datagram`.
/// `fields` is 4 for SKF (number/total are part of the AAD), 0 for SK.
/// Returns the inner plaintext without padding.
fn open_payload(
    datagram: &[u8],
    body: &[u8],
    fields: usize,
    sk: &dyn SkProtect,
) -> Result<Zeroizing<Vec<u8>>, WireError> {
    block_len(sk)?;
    let (iv_len, icv_len) = (sk.iv_len(), sk.icv_len());
    let min = iv_len + icv_len + 1;
    if body.len() < min {
        return Err(WireError::Truncated {
            what: "encrypted payload",
            need: min,
            have: body.len(),
        });
    }
    let data_len = body.len() - iv_len - icv_len;
    if data_len % sk.block_len().max(1) != 0 {
        return Err(WireError::BadLength {
            what: "encrypted payload",
            detail: format!(
                "ciphertext of {data_len} bytes is not a multiple of the block size {}",
                sk.block_len()
            ),
        });
    }
    // The encrypted payload is the last one: its header and fields end the AAD.
    let aad_len = datagram.len() - body.len();
    if aad_len < HEADER_LEN + GENERIC_PAYLOAD_HEADER_LEN + fields {
        return Err(WireError::Invalid {
            what: "encrypted payload",
            detail: "datagram does not match payload".into(),
        });
    }
    let aad = &datagram[..aad_len];
    let iv = &body[..iv_len];
    let mut data = Zeroizing::new(body[iv_len..iv_len + data_len].to_vec());
    let icv = &body[iv_len + data_len..];
    sk.open(aad, iv, &mut data, icv)?;
    let pad = usize::from(data[data_len - 1]);
    if pad + 1 > data_len {
        return Err(WireError::Invalid {
            what: "encrypted payload",
            detail: format!("pad length {pad} exceeds the {data_len}-byte plaintext"),
        });
    }
    data.truncate(data_len - pad - 1);
    Ok(data)
}

/// Encodes a message whose payloads are all inside one SK payload:
/// header, SK { inner payloads, padding, pad length }.
pub fn seal_message(header: &Header, inner: &[Payload], sk: &dyn SkProtect) -> Result<Vec<u8>, WireError> {
    // Sized up front: a growing buffer would leave copies of the plaintext in freed memory.
    let mut plain = Zeroizing::new(Vec::with_capacity(encode_capacity(inner)));
    let first = try_encode_payloads(inner, &mut plain)?;
    let block = block_len(sk)?;
    let total = HEADER_LEN
        + GENERIC_PAYLOAD_HEADER_LEN
        + sk.iv_len()
        + plain.len()
        + pad_len(plain.len(), block)
        + 1
        + sk.icv_len();
    let mut out = Vec::with_capacity(total);
    write_header(header, PayloadType::SK, total, &mut out);
    seal_payload(&mut out, first, None, &plain, sk)?;
    Ok(out)
}

/// Opens the SK payload of a message decoded from `datagram` and returns the
/// inner payloads. `datagram` must be the exact bytes `msg` was decoded from.
///
/// The AAD is everything before the SK payload body (IKE header, any
/// unencrypted payloads, SK generic header), as RFC 5282 §5.1 specifies.
pub fn open_message(datagram: &[u8], sk: &dyn SkProtect) -> Result<Vec<Payload>, WireError> {
    open_decoded(datagram, &decode_message(datagram)?, sk)
}

/// [`open_message`] for a message the caller already decoded from `datagram`
/// (saves decoding it twice).
pub fn open_decoded(datagram: &[u8], msg: &Message, sk: &dyn SkProtect) -> Result<Vec<Payload>, WireError> {
    match msg.payloads.last() {
        Some(Payload::Sk { first_inner, body }) => {
            let plain = open_payload(datagram, body, 0, sk)?;
            decode_payloads(*first_inner, &plain)
        }
        Some(Payload::Skf { .. }) => Err(WireError::Invalid {
            what: "message",
            detail: "SKF fragment: use FragmentReassembler".into(),
        }),
        _ => Err(WireError::Invalid {
            what: "message",
            detail: "no SK payload".into(),
        }),
    }
}

/// Encodes a message as RFC 7383 fragments, each datagram at most
/// `max_datagram` bytes (IKE header included).
///
/// The inner chain is encoded once and cut into chunks; each chunk is padded
/// and sealed in its own SKF payload. The first fragment's SKF next-payload
/// field is the first inner payload type, the others carry 0.
pub fn seal_fragments(
    header: &Header,
    inner: &[Payload],
    sk: &dyn SkProtect,
    max_datagram: usize,
) -> Result<Vec<Vec<u8>>, WireError> {
    // Sized up front: a growing buffer would leave copies of the plaintext in freed memory.
    let mut plain = Zeroizing::new(Vec::with_capacity(encode_capacity(inner)));
    let first = try_encode_payloads(inner, &mut plain)?;
    let block = block_len(sk)?;
    let overhead = HEADER_LEN + GENERIC_PAYLOAD_HEADER_LEN + SKF_FIELDS_LEN + sk.iv_len() + sk.icv_len();
    let max_datagram = max_datagram.min(usize::from(u16::MAX));
    let room = max_datagram.saturating_sub(overhead) / block * block;
    // One byte of every ciphertext is the pad length.
    let chunk_len = room.saturating_sub(1);
    if chunk_len == 0 {
        return Err(WireError::Invalid {
            what: "fragment size",
            detail: format!("{max_datagram} bytes leave no room for data after {overhead} bytes of overhead"),
        });
    }
    let chunks: Vec<&[u8]> = if plain.is_empty() {
        vec![&[][..]]
    } else {
        plain.chunks(chunk_len).collect()
    };
    let total = u16::try_from(chunks.len()).map_err(|_| WireError::TooLarge(plain.len()))?;
    let mut datagrams = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        // i < total <= u16::MAX, so this conversion cannot fail.
        let number = u16::try_from(i + 1).map_err(|_| WireError::TooLarge(plain.len()))?;
        let next = if number == 1 { first } else { PayloadType::NONE };
        let len = overhead + chunk.len() + pad_len(chunk.len(), block) + 1;
        let mut out = Vec::with_capacity(len);
        write_header(header, PayloadType::SKF, len, &mut out);
        seal_payload(&mut out, next, Some((number, total)), chunk, sk)?;
        datagrams.push(out);
    }
    Ok(datagrams)
}

/// Fragments received so far of one message.
struct PendingMessage {
    message_id: u32,
    total: u16,
    first_inner: PayloadType,
    fragments: Vec<Option<Zeroizing<Vec<u8>>>>,
    received: usize,
    bytes: usize,
}

/// Collects SKF fragments of one message until all have arrived (RFC 7383 §2.6).
///
/// Every fragment is authenticated and decrypted before it changes any state.
/// Only one message is reassembled at a time: a fragment with another Message
/// ID starts a new set, so use one reassembler per direction (requests from
/// the peer, responses to our requests). Duplicates are ignored; a fragment
/// with a higher Total Fragments discards the set collected so far, one with a
/// lower total is ignored. At most [`MAX_FRAGMENTS`] fragments and
/// [`MAX_REASSEMBLED_LEN`] plaintext bytes are kept.
#[derive(Default)]
pub struct FragmentReassembler {
    pending: Option<PendingMessage>,
}

impl fmt::Debug for FragmentReassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pending {
            None => f.write_str("FragmentReassembler(empty)"),
            Some(p) => write!(
                f,
                "FragmentReassembler(message {}: {}/{} fragments, {} bytes)",
                p.message_id, p.received, p.total, p.bytes
            ),
        }
    }
}

impl FragmentReassembler {
    /// A new, empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Message ID of the message being reassembled, if any.
    pub fn pending_message_id(&self) -> Option<u32> {
        self.pending.as_ref().map(|p| p.message_id)
    }

    /// Drops the fragments collected so far.
    pub fn clear(&mut self) {
        self.pending = None;
    }

    /// Verifies and decrypts one SKF datagram. Returns the inner payloads once
    /// the last missing fragment of the message has arrived, `None` before.
    pub fn push(&mut self, datagram: &[u8], sk: &dyn SkProtect) -> Result<Option<Vec<Payload>>, WireError> {
        let msg = decode_message(datagram)?;
        let Some(Payload::Skf {
            first_inner,
            number,
            total,
            body,
        }) = msg.payloads.last()
        else {
            return Err(WireError::Invalid {
                what: "message",
                detail: "no SKF payload".into(),
            });
        };
        let (number, total) = (*number, *total);
        if number == 0 || total == 0 || number > total || total > MAX_FRAGMENTS {
            return Err(WireError::Invalid {
                what: "SKF payload",
                detail: format!("fragment {number} of {total} (at most {MAX_FRAGMENTS} fragments)"),
            });
        }
        let plain = open_payload(datagram, body, SKF_FIELDS_LEN, sk)?;
        let message_id = msg.header.message_id;

        let restart = match &self.pending {
            None => true,
            Some(p) if p.message_id != message_id => true,
            Some(p) if total > p.total => true,
            Some(p) if total < p.total => return Ok(None),
            Some(_) => false,
        };
        if restart {
            self.pending = Some(PendingMessage {
                message_id,
                total,
                first_inner: PayloadType::NONE,
                fragments: (0..total).map(|_| None).collect(),
                received: 0,
                bytes: 0,
            });
        }
        let Some(pending) = self.pending.as_mut() else {
            return Ok(None);
        };
        let slot = usize::from(number - 1);
        if pending.fragments[slot].is_some() {
            return Ok(None);
        }
        if pending.bytes + plain.len() > MAX_REASSEMBLED_LEN {
            self.pending = None;
            return Err(WireError::TooLarge(MAX_REASSEMBLED_LEN + 1));
        }
        if number == 1 {
            pending.first_inner = *first_inner;
        }
        pending.bytes += plain.len();
        pending.received += 1;
        pending.fragments[slot] = Some(plain);
        if pending.received < usize::from(pending.total) {
            return Ok(None);
        }
        let mut whole = Zeroizing::new(Vec::with_capacity(pending.bytes));
        for fragment in pending.fragments.iter().flatten() {
            whole.extend_from_slice(fragment);
        }
        let first = pending.first_inner;
        self.pending = None;
        decode_payloads(first, &whole).map(Some)
    }
}
