//! Outbound ESP: turns an IP packet into an ESP packet in place.
//!
//! The result starts at the SPI; outer IP/UDP headers are added by the I/O
//! layer (the kernel for sockets, [`crate::ip::prepend_outer`] for raw ports).

use super::aead::{EspCipher, IvSource};
use super::{ESP_HEADER_LEN, EspError, Mode, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::buf::PacketBuffer;

/// The padding pattern of RFC 4303 §2.4 (1, 2, 3, ...), one block long.
const PAD_PATTERN: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// Outbound parameters of one packet's SA.
#[derive(Debug, Clone, Copy)]
pub struct EncapParams<'a> {
    /// The SA's keyed cipher.
    pub cipher: &'a EspCipher,
    /// SPI chosen by the peer.
    pub spi: u32,
    /// Full 64-bit sequence number of this packet (already allocated).
    pub seq: u64,
    /// Extended sequence numbers negotiated.
    pub esn: bool,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Largest ESP packet (SPI to ICV) that fits the path MTU.
    pub max_esp_len: usize,
}

/// What [`encap`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapInfo {
    /// ESP next header written in the trailer.
    pub next_header: u8,
    /// Length of the ESP packet.
    pub esp_len: usize,
}

/// ESP overhead of `payload_len` bytes of payload: header, IV, padding, trailer, ICV.
pub fn esp_len_for(cipher: &EspCipher, payload_len: usize) -> usize {
    // Block lengths are powers of two (4 or 16): rounding is a mask.
    let block = cipher.block_len();
    let padded = (payload_len + 2 + block - 1) & !(block - 1);
    ESP_HEADER_LEN + cipher.iv_len() + padded + cipher.icv_len()
}

/// Encapsulates the IP packet in `buf` into ESP, in place.
///
/// Tunnel mode protects the whole packet; transport mode removes the IP
/// header (IPv4 with options, or the fixed IPv6 header) and protects the rest
/// (IPv6 extension headers, if any, travel inside ESP).
pub fn encap<B: PacketBuffer>(buf: &mut B, p: &EncapParams<'_>, ivs: &mut IvSource) -> Result<EncapInfo, EspError> {
    let info = encap_frame(buf, p)?;
    p.cipher.seal(buf.data_mut(), p.seq, p.esn, ivs)?;
    Ok(info)
}

/// [`encap`] without the encryption: ESP header, padding, trailer and room
/// for the IV and ICV around the payload; the SA's cipher then seals the
/// packet in place ([`super::aead::EspCipher::seal`] or a batch job).
pub fn encap_frame<B: PacketBuffer>(buf: &mut B, p: &EncapParams<'_>) -> Result<EncapInfo, EspError> {
    Framer::new(p).frame(buf, p.seq)
}

/// [`encap_frame`] for a run of packets of one SA: the cipher's lengths and
/// the SA's fields are read once ([`Framer::new`]), then [`Framer::frame`]
/// frames each packet with its sequence number.
#[derive(Debug, Clone, Copy)]
pub struct Framer {
    /// SPI, as sent.
    spi: [u8; 4],
    mode: Mode,
    /// Cipher block length minus one (block lengths are powers of two).
    block_mask: usize,
    /// ESP header and IV.
    head_len: usize,
    icv_len: usize,
    max_esp_len: usize,
}

impl Framer {
    /// The framing of `p`'s SA (`p.seq` is not used: see [`Framer::frame`]).
    #[inline]
    pub fn new(p: &EncapParams<'_>) -> Self {
        Self {
            spi: p.spi.to_be_bytes(),
            mode: p.mode,
            block_mask: p.cipher.block_len() - 1,
            head_len: ESP_HEADER_LEN + p.cipher.iv_len(),
            icv_len: p.cipher.icv_len(),
            max_esp_len: p.max_esp_len,
        }
    }

    /// [`encap_frame`] of `buf` with sequence number `seq`: one `append`
    /// (padding, trailer, ICV room) and one `prepend` (ESP header, IV room).
    #[inline(always)]
    pub fn frame<B: PacketBuffer>(&self, buf: &mut B, seq: u64) -> Result<EncapInfo, EspError> {
        let next_header = match self.mode {
            Mode::Tunnel => match buf.data().first().map(|b| b >> 4) {
                Some(4) => NEXT_HEADER_IPV4,
                Some(6) => NEXT_HEADER_IPV6,
                _ => return Err(EspError::Malformed("inner packet is not IPv4 or IPv6")),
            },
            Mode::Transport => {
                let (hdr_len, proto) = transport_header(buf.data())?;
                buf.trim_front(hdr_len)?;
                proto
            }
        };
        let payload_len = buf.len();
        // Payload and the 2 trailer bytes, rounded up to the block.
        let padded = (payload_len + 2 + self.block_mask) & !self.block_mask;
        let esp_len = self.head_len + padded + self.icv_len;
        if esp_len > self.max_esp_len {
            return Err(EspError::Oversize("exceeds path MTU"));
        }
        let pad_len = padded - payload_len - 2;
        let trailer = buf.append(pad_len + 2 + self.icv_len)?;
        // RFC 4303 §2.4: padding bytes are 1, 2, 3, ... Padding is shorter than
        // a block (at most 15 bytes) and the trailer holds at least the 2 trailer
        // bytes and a 16-byte ICV, so one fixed 16-byte store writes it; what
        // lands in the ICV is overwritten by the seal.
        match trailer.first_chunk_mut::<16>() {
            Some(t) => *t = PAD_PATTERN,
            // Not reached with the ciphers here; a loop, so the compiler does not
            // merge both arms into one variable-length copy.
            None => {
                for (b, p) in trailer[..pad_len].iter_mut().zip(PAD_PATTERN) {
                    *b = p;
                }
            }
        }
        trailer[pad_len] = pad_len as u8;
        trailer[pad_len + 1] = next_header;
        let hdr = buf.prepend(self.head_len)?;
        let [s0, s1, s2, s3] = self.spi;
        let [q0, q1, q2, q3] = (seq as u32).to_be_bytes();
        match hdr.first_chunk_mut::<ESP_HEADER_LEN>() {
            Some(h) => *h = [s0, s1, s2, s3, q0, q1, q2, q3],
            // head_len is at least ESP_HEADER_LEN.
            None => unreachable!("ESP header room"),
        }
        Ok(EncapInfo { next_header, esp_len })
    }
}

/// Header length and upper protocol of a transport-mode packet.
fn transport_header(pkt: &[u8]) -> Result<(usize, u8), EspError> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            if pkt.len() < 20 {
                return Err(EspError::Malformed("IPv4 header truncated"));
            }
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            if ihl < 20 || total < ihl || total != pkt.len() {
                return Err(EspError::Malformed("IPv4 header lengths"));
            }
            Ok((ihl, pkt[9]))
        }
        Some(6) => {
            if pkt.len() < 40 {
                return Err(EspError::Malformed("IPv6 header truncated"));
            }
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if 40 + plen != pkt.len() {
                return Err(EspError::Malformed("IPv6 payload length"));
            }
            Ok((40, pkt[6]))
        }
        _ => Err(EspError::Malformed("not an IP packet")),
    }
}
