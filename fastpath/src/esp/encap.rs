//! Outbound ESP: turns an IP packet into an ESP packet in place.
//!
//! The result starts at the SPI; outer IP/UDP headers are added by the I/O
//! layer (the kernel for sockets, [`crate::ip::prepend_outer`] for raw ports).

use super::aead::{EspCipher, IvSource};
use super::{ESP_HEADER_LEN, EspError, Mode, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::buf::PacketBuffer;
use crate::ip::OuterHeaders;

/// Length of the outer IPv4 header [`Framer::frame_outer`] may write.
const OUTER_V4_LEN: usize = 20;

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
        self.frame_outer(buf, seq, None).map(|(info, _)| info)
    }

    /// [`Framer::frame`], and when `outer` is an IPv4 header without UDP
    /// ([`OuterHeaders::ipv4_esp`]) that fits the headroom too, that header
    /// written by the same `prepend` (its lengths and checksum depend only on
    /// the ESP length, known here). Returns the length of the outer header in
    /// front of the ESP packet: 20, or 0 when the caller still has to add
    /// the outer headers (after sealing) with [`OuterHeaders::prepend`].
    ///
    /// The ESP packet to seal is the buffer's data after that many bytes.
    #[inline(always)]
    pub fn frame_outer<B: PacketBuffer>(
        &self,
        buf: &mut B,
        seq: u64,
        outer: Option<&OuterHeaders>,
    ) -> Result<(EncapInfo, usize), EspError> {
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
        // One bounds check for both trailer bytes (the trailer is longer).
        match trailer.get_mut(pad_len..pad_len + 2) {
            Some([p, n]) => {
                *p = pad_len as u8;
                *n = next_header;
            }
            _ => unreachable!("trailer room"),
        }
        let [s0, s1, s2, s3] = self.spi;
        let [q0, q1, q2, q3] = (seq as u32).to_be_bytes();
        let esp_hdr = [s0, s1, s2, s3, q0, q1, q2, q3];
        let info = EncapInfo { next_header, esp_len };
        // A failed prepend leaves the buffer as it was: then the ESP header alone.
        if let Some(ip) = outer.and_then(|o| o.ipv4_esp(esp_len))
            && let Ok(front) = buf.prepend(OUTER_V4_LEN + self.head_len)
        {
            match front.first_chunk_mut::<{ OUTER_V4_LEN + ESP_HEADER_LEN }>() {
                Some(h) => {
                    h[..OUTER_V4_LEN].copy_from_slice(&ip);
                    h[OUTER_V4_LEN..].copy_from_slice(&esp_hdr);
                }
                // head_len is at least ESP_HEADER_LEN.
                None => unreachable!("outer and ESP header room"),
            }
            return Ok((info, OUTER_V4_LEN));
        }
        let hdr = buf.prepend(self.head_len)?;
        match hdr.first_chunk_mut::<ESP_HEADER_LEN>() {
            Some(h) => *h = esp_hdr,
            // head_len is at least ESP_HEADER_LEN.
            None => unreachable!("ESP header room"),
        }
        Ok((info, 0))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PacketBuf;
    use crate::esp::aead::{CipherKeys, EncAlg, IntegAlg};
    use std::net::IpAddr;
    use zeroize::Zeroizing;

    fn cipher(enc: EncAlg, integ: IntegAlg, ek_len: usize, ik_len: usize) -> EspCipher {
        EspCipher::new(&CipherKeys {
            enc,
            integ,
            enc_key: Zeroizing::new((0..ek_len as u8).collect()),
            integ_key: Zeroizing::new((0..ik_len as u8).map(|b| b ^ 0x5c).collect()),
        })
        .unwrap()
    }

    /// The framing as it was before `Framer` (the oracle).
    fn encap_frame_oracle<B: PacketBuffer>(buf: &mut B, p: &EncapParams<'_>) -> Result<EncapInfo, EspError> {
        let next_header = match p.mode {
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
        let esp_len = esp_len_for(p.cipher, payload_len);
        if esp_len > p.max_esp_len {
            return Err(EspError::Oversize("exceeds path MTU"));
        }
        let pad_len = esp_len - ESP_HEADER_LEN - p.cipher.iv_len() - p.cipher.icv_len() - payload_len - 2;
        let trailer = buf.append(pad_len + 2 + p.cipher.icv_len())?;
        match trailer.get_mut(..PAD_PATTERN.len()) {
            Some(t) => t.copy_from_slice(&PAD_PATTERN),
            None => {
                for (b, p) in trailer[..pad_len].iter_mut().zip(PAD_PATTERN) {
                    *b = p;
                }
            }
        }
        trailer[pad_len] = pad_len as u8;
        trailer[pad_len + 1] = next_header;
        let hdr = buf.prepend(ESP_HEADER_LEN + p.cipher.iv_len())?;
        hdr[..4].copy_from_slice(&p.spi.to_be_bytes());
        hdr[4..8].copy_from_slice(&(p.seq as u32).to_be_bytes());
        Ok(EncapInfo { next_header, esp_len })
    }

    /// An IPv4 (or IPv6, or not IP) packet of `len` bytes with consistent lengths.
    fn packet(first: u8, len: usize) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ 0xa5).collect();
        if let Some(b) = p.first_mut() {
            *b = first;
        }
        if first == 0x45 && len >= 20 {
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        if first == 0x60 && len >= 40 {
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        p
    }

    #[test]
    fn framer_matches_the_former_framing_and_outer_headers() {
        let gcm = cipher(EncAlg::AesGcm16_128, IntegAlg::None, 20, 0);
        let cbc = cipher(EncAlg::AesCbc128, IntegAlg::HmacSha256_128, 16, 32);
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let outers = [
            OuterHeaders::new(v4("10.1.2.3"), v4("192.0.2.200"), None),
            OuterHeaders::new(v4("10.1.2.3"), v4("192.0.2.200"), Some((4500, 4500))),
            OuterHeaders::new(v4("2001:db8::1"), v4("2001:db8::2"), None),
        ];
        let mut cases = 0;
        for c in [&gcm, &cbc] {
            for mode in [Mode::Tunnel, Mode::Transport] {
                for first in [0x45u8, 0x60, 0x46, 0x10] {
                    for len in [0usize, 1, 19, 20, 21, 40, 41, 63, 64, 65, 100, 1400, 1500] {
                        for headroom in [0usize, 7, 8, 16, 24, 27, 28, 36, 43, 44, 128] {
                            for tailroom in [0usize, 17, 18, 40, 256] {
                                for max_esp_len in [60usize, 1438, 65535] {
                                    let p = EncapParams {
                                        cipher: c,
                                        spi: 0x0102_0304,
                                        seq: 0x1_0000_0005,
                                        esn: true,
                                        mode,
                                        max_esp_len,
                                    };
                                    let pkt = packet(first, len);
                                    let mut a = PacketBuf::new(headroom, headroom + len + tailroom);
                                    a.set_data(&pkt).unwrap();
                                    let mut b = a.clone();
                                    let ra = encap_frame_oracle(&mut a, &p);
                                    let rb = encap_frame(&mut b, &p);
                                    assert_eq!(ra, rb);
                                    assert_eq!(a.data(), b.data());
                                    cases += 1;
                                    if ra.is_err() || !c.enc_alg().is_aead() {
                                        continue;
                                    }
                                    // Framing with the outer header, then the
                                    // seal behind it: as frame, seal, prepend.
                                    for outer in &outers {
                                        let mut x = PacketBuf::new(headroom, headroom + len + tailroom);
                                        x.set_data(&pkt).unwrap();
                                        let mut y = x.clone();
                                        let mut ivs = IvSource::new();
                                        let fx = encap_frame(&mut x, &p).unwrap();
                                        p.cipher.seal(x.data_mut(), p.seq, p.esn, &mut ivs).unwrap();
                                        let ox = outer.prepend(&mut x);
                                        let (fy, front) =
                                            Framer::new(&p).frame_outer(&mut y, p.seq, Some(outer)).unwrap();
                                        assert_eq!(fx, fy);
                                        p.cipher
                                            .seal(&mut y.data_mut()[front..], p.seq, p.esn, &mut ivs)
                                            .unwrap();
                                        let oy = if front == 0 { outer.prepend(&mut y) } else { Ok(()) };
                                        assert_eq!(ox, oy);
                                        assert_eq!(x.data(), y.data());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(cases > 10_000);
    }
}
