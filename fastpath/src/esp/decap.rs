//! Inbound ESP: verifies and decrypts an ESP packet in place.
//!
//! Order (RFC 4303 §3.4): replay check → ICV check and decryption → window
//! advance → trailer and inner packet checks. A packet that fails any step
//! leaves the SA's window untouched, except that a verified packet with a bad
//! trailer still consumes its sequence number (it was authentic).

use super::aead::{DirectGcm, DirectOpen, EspCipher};
use super::replay::ReplayWindow;
use super::{ESP_HEADER_LEN, EspError, Mode, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE, parse_header};
use crate::buf::PacketBuffer;
use crate::ip;
use std::net::IpAddr;

/// Inbound parameters of one packet's SA.
#[derive(Debug, Clone, Copy)]
pub struct DecapParams<'a> {
    /// The SA's keyed cipher.
    pub cipher: &'a EspCipher,
    /// Extended sequence numbers negotiated.
    pub esn: bool,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Outer source address (the peer; transport mode rebuilds the IP header from it).
    pub outer_src: IpAddr,
    /// Outer destination address (us).
    pub outer_dst: IpAddr,
    /// The packet arrived UDP-encapsulated (transport mode then recomputes
    /// TCP/UDP checksums, RFC 3948 §3.1.2).
    pub udp_encapsulated: bool,
}

/// What [`decap`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecapInfo {
    /// Full sequence number of the packet.
    pub seq: u64,
    /// ESP next header.
    pub next_header: u8,
}

/// Decapsulates the ESP packet in `buf` (starting at the SPI) in place,
/// leaving the inner IP packet.
pub fn decap<B: PacketBuffer>(
    buf: &mut B,
    p: &DecapParams<'_>,
    window: &mut ReplayWindow,
) -> Result<DecapInfo, EspError> {
    let seq = decap_check(buf, p, window)?;
    p.cipher.open(buf.data_mut(), seq, p.esn)?;
    decap_finish(buf, p, window, seq)
}

/// Decapsulates like [`decap`] with the SA's [`DirectGcm`] `g` (from
/// [`crate::esp::aead::EspCipher::direct_open`]): the same steps, with the
/// AES-GCM lengths constants (IV 8, ICV 16, block 4) and no accelerator
/// lookup per packet; `nonce`, when given, is the packet's nonce built
/// beforehand ([`DirectOpen::nonce_of`]).
#[inline(always)]
pub fn decap_direct<B: PacketBuffer, G: DirectGcm>(
    buf: &mut B,
    p: &DecapParams<'_>,
    window: &mut ReplayWindow,
    g: DirectOpen<'_, G>,
    nonce: Option<&[u8; 12]>,
) -> Result<DecapInfo, EspError> {
    let seq = check_with(buf, window, Lens::GCM)?;
    g.open_staged(buf.data_mut(), seq, p.esn, nonce)?;
    finish_with(buf, p, window, seq, Lens::GCM)
}

/// IV, ICV and block lengths of a packet's cipher.
#[derive(Clone, Copy)]
struct Lens {
    iv: usize,
    icv: usize,
    block: usize,
}

impl Lens {
    /// AES-GCM's (RFC 4106): constants the fast path folds in.
    const GCM: Lens = Lens {
        iv: 8,
        icv: 16,
        block: 4,
    };

    #[inline(always)]
    fn of(c: &EspCipher) -> Lens {
        Lens {
            iv: c.iv_len(),
            icv: c.icv_len(),
            block: c.block_len(),
        }
    }
}

/// The steps of [`decap`] before decryption: header, lengths and replay
/// check (the window is not advanced). Returns the full sequence number.
pub fn decap_check<B: PacketBuffer>(buf: &B, p: &DecapParams<'_>, window: &ReplayWindow) -> Result<u64, EspError> {
    check_with(buf, window, Lens::of(p.cipher))
}

/// [`decap_check`] with the cipher's lengths given.
#[inline(always)]
fn check_with<B: PacketBuffer>(buf: &B, window: &ReplayWindow, lens: Lens) -> Result<u64, EspError> {
    let (_spi, seq_lo) = parse_header(buf.data())?;
    let overhead = ESP_HEADER_LEN + lens.iv + lens.icv;
    let len = buf.len();
    if len < overhead + 4 {
        return Err(EspError::Malformed("shorter than ESP overhead and trailer"));
    }
    // Block lengths are powers of two (4 or 16): a mask, not a division.
    if (len - overhead) & (lens.block - 1) != 0 {
        return Err(EspError::Malformed("ciphertext not aligned"));
    }
    window.check(seq_lo)
}

/// The steps of [`decap`] after a successful verification and decryption
/// of the packet with sequence number `seq`: window advance, trailer and
/// inner packet checks, ESP removal.
#[inline(always)]
pub fn decap_finish<B: PacketBuffer>(
    buf: &mut B,
    p: &DecapParams<'_>,
    window: &mut ReplayWindow,
    seq: u64,
) -> Result<DecapInfo, EspError> {
    finish_with(buf, p, window, seq, Lens::of(p.cipher))
}

/// [`decap_finish`] with the cipher's lengths given.
#[inline(always)]
fn finish_with<B: PacketBuffer>(
    buf: &mut B,
    p: &DecapParams<'_>,
    window: &mut ReplayWindow,
    seq: u64,
    lens: Lens,
) -> Result<DecapInfo, EspError> {
    window.accept(seq)?;
    let hdr_len = ESP_HEADER_LEN + lens.iv;
    let data = buf.data();
    let len = data.len();
    // `payload | padding | pad length | next header`, decrypted
    // ([`decap_check`] made sure the packet holds it).
    let ct = &data[hdr_len..len - lens.icv];
    let [.., pad_len, next_header] = *ct else {
        return Err(EspError::BadPadding);
    };
    let pad_len = usize::from(pad_len);
    let Some(payload_len) = ct.len().checked_sub(pad_len + 2) else {
        return Err(EspError::BadPadding);
    };
    if !padding_ok(ct, pad_len) {
        return Err(EspError::BadPadding);
    }
    // What stays of the payload (tunnel mode trims TFC padding after the
    // inner packet): one trim at each end.
    let keep = match p.mode {
        Mode::Tunnel => inner_len(&ct[..payload_len], next_header),
        Mode::Transport => (next_header != NEXT_HEADER_NONE).then_some(payload_len),
    };
    let Some(keep) = keep else {
        return Err(refuse_payload(buf, hdr_len, payload_len, next_header));
    };
    buf.keep_range(hdr_len, keep)?;
    if p.mode == Mode::Transport {
        rebuild_transport(buf, p, next_header)?;
    }
    Ok(DecapInfo { seq, next_header })
}

/// Whether the `pad_len` bytes before the last two of `ct` (pad length,
/// next header) are 1, 2, 3, ... (RFC 4303 §2.4; the caller checked that
/// they are there). Up to three of them, the usual with a 4-byte block,
/// are compared as one word.
#[inline(always)]
fn padding_ok(ct: &[u8], pad_len: usize) -> bool {
    /// The low `8 * k` bits of the word, and the padding they must hold.
    const MASK: [u32; 4] = [0, 0xff, 0xffff, 0xff_ffff];
    const WANT: [u32; 4] = [0, 0x01, 0x0102, 0x01_0203];
    let end = ct.len() - 2;
    if pad_len < 4 && end >= 4 {
        let w = u32::from_be_bytes([ct[end - 4], ct[end - 3], ct[end - 2], ct[end - 1]]);
        return w & MASK[pad_len] == WANT[pad_len];
    }
    let pad = &ct[end - pad_len..end];
    pad.iter().enumerate().all(|(i, b)| usize::from(*b) == i + 1)
}

/// Length of the inner packet of tunnel mode at the start of `pkt` (what
/// follows it is TFC padding), `None` when `next_header` or the inner
/// header's lengths do not fit ([`inner_error`] says why).
#[inline]
fn inner_len(pkt: &[u8], next_header: u8) -> Option<usize> {
    match (next_header, pkt.first()? >> 4) {
        (NEXT_HEADER_IPV4, 4) if pkt.len() >= 20 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            (ihl >= 20 && total >= ihl && total <= pkt.len()).then_some(total)
        }
        (NEXT_HEADER_IPV6, 6) if pkt.len() >= 40 => {
            let total = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            (total <= pkt.len()).then_some(total)
        }
        _ => None,
    }
}

/// Why a verified packet's payload is refused ([`inner_len`] found no inner
/// packet, or a dummy packet), after removing the ESP header and trailer as
/// for an accepted one.
#[cold]
#[inline(never)]
fn refuse_payload<B: PacketBuffer>(buf: &mut B, hdr_len: usize, payload_len: usize, next_header: u8) -> EspError {
    let trailer = buf.len() - hdr_len - payload_len;
    if let Err(e) = buf.trim_back(trailer).and_then(|()| buf.trim_front(hdr_len)) {
        return e.into();
    }
    if next_header == NEXT_HEADER_NONE {
        return EspError::Dummy;
    }
    inner_error(buf.data(), next_header)
}

/// The error of a tunnel-mode payload that holds no inner packet.
fn inner_error(pkt: &[u8], next_header: u8) -> EspError {
    match (next_header, pkt.first().map(|b| b >> 4)) {
        (NEXT_HEADER_IPV4, Some(4)) if pkt.len() < 20 => EspError::Malformed("inner IPv4 header truncated"),
        (NEXT_HEADER_IPV4, Some(4)) => EspError::Malformed("inner IPv4 lengths"),
        (NEXT_HEADER_IPV6, Some(6)) if pkt.len() < 40 => EspError::Malformed("inner IPv6 header truncated"),
        (NEXT_HEADER_IPV6, Some(6)) => EspError::Malformed("inner IPv6 length"),
        _ => EspError::Malformed("next header does not match inner packet"),
    }
}

/// Puts an IP header back in front of a transport-mode payload.
fn rebuild_transport<B: PacketBuffer>(buf: &mut B, p: &DecapParams<'_>, next_header: u8) -> Result<(), EspError> {
    if p.udp_encapsulated && matches!(next_header, ip::IPPROTO_TCP | ip::IPPROTO_UDP) {
        // NAT changed the addresses the sender's checksum covers: recompute it.
        let off = if next_header == ip::IPPROTO_TCP { 16 } else { 6 };
        let seg = buf.data_mut();
        if seg.len() < off + 2 {
            return Err(EspError::Malformed("transport segment truncated"));
        }
        let udp_zero = next_header == ip::IPPROTO_UDP && seg[6..8] == [0, 0] && p.outer_src.is_ipv4();
        if !udp_zero {
            seg[off..off + 2].fill(0);
            let c = ip::l4_checksum(p.outer_src, p.outer_dst, next_header, seg);
            let c = if c == 0 && next_header == ip::IPPROTO_UDP {
                0xffff
            } else {
                c
            };
            seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    ip::prepend_ip_header(buf, p.outer_src, p.outer_dst, next_header).map_err(|e| match e {
        ip::IpError::FamilyMismatch => EspError::Malformed("outer address families differ"),
        _ => EspError::Oversize("transport payload too long"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::PacketBuf;
    use crate::esp::aead::{CipherKeys, EncAlg, IntegAlg};
    use zeroize::Zeroizing;

    /// `decap_finish` as it was before one-trim-per-end (trailer and header
    /// trimmed, then the inner packet checked and TFC padding trimmed): the
    /// reference for results and buffer contents.
    fn reference<B: PacketBuffer>(
        buf: &mut B,
        p: &DecapParams<'_>,
        window: &mut ReplayWindow,
        seq: u64,
    ) -> Result<DecapInfo, EspError> {
        window.accept(seq)?;
        let iv_len = p.cipher.iv_len();
        let icv_len = p.cipher.icv_len();
        let data = buf.data();
        let len = data.len();
        let ct_len = len - ESP_HEADER_LEN - iv_len - icv_len;
        let trailer_end = len - icv_len;
        let next_header = data[trailer_end - 1];
        let pad_len = usize::from(data[trailer_end - 2]);
        if pad_len + 2 > ct_len {
            return Err(EspError::BadPadding);
        }
        let pad = &data[trailer_end - 2 - pad_len..trailer_end - 2];
        if pad.iter().enumerate().any(|(i, b)| usize::from(*b) != i + 1) {
            return Err(EspError::BadPadding);
        }
        buf.trim_back(icv_len + pad_len + 2)?;
        buf.trim_front(ESP_HEADER_LEN + iv_len)?;
        if next_header == NEXT_HEADER_NONE {
            return Err(EspError::Dummy);
        }
        match p.mode {
            Mode::Tunnel => {
                let pkt = buf.data();
                let ip_len = match (next_header, pkt.first().map(|b| b >> 4)) {
                    (NEXT_HEADER_IPV4, Some(4)) => {
                        if pkt.len() < 20 {
                            return Err(EspError::Malformed("inner IPv4 header truncated"));
                        }
                        let ihl = usize::from(pkt[0] & 0x0f) * 4;
                        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
                        if ihl < 20 || total < ihl || total > pkt.len() {
                            return Err(EspError::Malformed("inner IPv4 lengths"));
                        }
                        total
                    }
                    (NEXT_HEADER_IPV6, Some(6)) => {
                        if pkt.len() < 40 {
                            return Err(EspError::Malformed("inner IPv6 header truncated"));
                        }
                        let total = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
                        if total > pkt.len() {
                            return Err(EspError::Malformed("inner IPv6 length"));
                        }
                        total
                    }
                    _ => return Err(EspError::Malformed("next header does not match inner packet")),
                };
                let extra = buf.data().len() - ip_len;
                buf.trim_back(extra)?;
            }
            Mode::Transport => rebuild_transport(buf, p, next_header)?,
        }
        Ok(DecapInfo { seq, next_header })
    }

    /// Decrypted ESP packets (`SPI | SEQ | IV | payload | padding | pad
    /// length | next header | ICV`) of every shape the trailer and inner
    /// checks tell apart.
    fn packets() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut inners: Vec<(u8, Vec<u8>)> = Vec::new();
        for (total, ihl, len) in [
            (20u16, 5u8, 20usize),
            (40, 5, 48),
            (60, 6, 60),
            (30, 5, 20),
            (24, 4, 24),
            (20, 8, 40),
        ] {
            let mut v = vec![0u8; len];
            v[0] = 0x40 | ihl;
            v[2..4].copy_from_slice(&total.to_be_bytes());
            inners.push((NEXT_HEADER_IPV4, v.clone()));
            inners.push((NEXT_HEADER_IPV6, v.clone()));
            inners.push((17, v));
        }
        for (plen, len) in [(0u16, 40usize), (8, 56), (20, 40), (0, 30)] {
            let mut v = vec![0u8; len];
            v[0] = 0x60;
            v[4..6].copy_from_slice(&plen.to_be_bytes());
            inners.push((NEXT_HEADER_IPV6, v.clone()));
            inners.push((NEXT_HEADER_IPV4, v));
        }
        inners.push((NEXT_HEADER_NONE, vec![0x45; 20]));
        inners.push((NEXT_HEADER_NONE, vec![]));
        inners.push((NEXT_HEADER_IPV4, vec![0x45; 3]));
        inners.push((NEXT_HEADER_IPV4, vec![]));
        inners.push((6, vec![1u8; 24]));
        for (nh, inner) in inners {
            for pad_len in [0usize, 1, 2, 3, 7, 255] {
                for bad_pad in [None, Some(0usize), Some(pad_len.saturating_sub(1))] {
                    if bad_pad.is_some() && pad_len == 0 {
                        continue;
                    }
                    let mut p = vec![1, 2, 3, 4, 0, 0, 0, 9];
                    p.extend_from_slice(&[7u8; 8]);
                    p.extend_from_slice(&inner);
                    p.extend((1..=pad_len).map(|i| i as u8));
                    if let Some(k) = bad_pad {
                        let at = p.len() - pad_len + k;
                        p[at] ^= 0x80;
                    }
                    p.push(pad_len as u8);
                    p.push(nh);
                    p.extend_from_slice(&[0xaa; 16]);
                    out.push(p);
                }
            }
        }
        // Trailers claiming more padding than there is.
        for body in [0usize, 1, 2, 5] {
            let mut p = vec![1, 2, 3, 4, 0, 0, 0, 9];
            p.extend_from_slice(&[7u8; 8]);
            p.extend((0..body).map(|i| i as u8 + 1));
            p.extend_from_slice(&[200, 4]);
            p.extend_from_slice(&[0xaa; 16]);
            out.push(p);
        }
        out
    }

    #[test]
    fn finish_matches_the_two_trim_reference() {
        let keys = CipherKeys {
            enc: EncAlg::AesGcm16_128,
            integ: IntegAlg::None,
            enc_key: Zeroizing::new(vec![3u8; 20]),
            integ_key: Zeroizing::new(Vec::new()),
        };
        let cipher = EspCipher::new(&keys).unwrap();
        let mut checked = 0;
        for mode in [Mode::Tunnel, Mode::Transport] {
            for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
                for udp_encapsulated in [false, true] {
                    let p = DecapParams {
                        cipher: &cipher,
                        esn: false,
                        mode,
                        outer_src: src.parse().unwrap(),
                        outer_dst: dst.parse().unwrap(),
                        udp_encapsulated,
                    };
                    for pkt in packets() {
                        for (seq, top) in [(9u64, 8u64), (9, 0), (9, 20), (9, 9), (0, 3)] {
                            let (mut a, mut b) = (
                                PacketBuf::from_slice(&pkt).unwrap(),
                                PacketBuf::from_slice(&pkt).unwrap(),
                            );
                            let (mut wa, mut wb) = (ReplayWindow::new(64, false), ReplayWindow::new(64, false));
                            if top > 0 {
                                wa.accept(top).unwrap();
                                wb.accept(top).unwrap();
                            }
                            let ra = decap_finish(&mut a, &p, &mut wa, seq);
                            let rb = reference(&mut b, &p, &mut wb, seq);
                            assert_eq!(ra, rb, "{mode:?} {src} {pkt:02x?} seq {seq} top {top}");
                            assert_eq!(a.data(), b.data(), "{mode:?} {src} {pkt:02x?}");
                            assert_eq!(wa.top(), wb.top());
                            for s in 1..=top.max(seq) {
                                assert_eq!(
                                    wa.check(s as u32).is_ok(),
                                    wb.check(s as u32).is_ok(),
                                    "window slot {s}"
                                );
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }
}
