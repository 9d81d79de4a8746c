//! Inbound ESP: verifies and decrypts an ESP packet in place.
//!
//! Order (RFC 4303 §3.4): replay check → ICV check and decryption → window
//! advance → trailer and inner packet checks. A packet that fails any step
//! leaves the SA's window untouched, except that a verified packet with a bad
//! trailer still consumes its sequence number (it was authentic).

use super::aead::EspCipher;
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

/// The steps of [`decap`] before decryption: header, lengths and replay
/// check (the window is not advanced). Returns the full sequence number.
pub fn decap_check<B: PacketBuffer>(buf: &B, p: &DecapParams<'_>, window: &ReplayWindow) -> Result<u64, EspError> {
    let (_spi, seq_lo) = parse_header(buf.data())?;
    let overhead = ESP_HEADER_LEN + p.cipher.iv_len() + p.cipher.icv_len();
    let len = buf.len();
    if len < overhead + 4 {
        return Err(EspError::Malformed("shorter than ESP overhead and trailer"));
    }
    // Block lengths are powers of two (4 or 16): a mask, not a division.
    if (len - overhead) & (p.cipher.block_len() - 1) != 0 {
        return Err(EspError::Malformed("ciphertext not aligned"));
    }
    window.check(seq_lo)
}

/// The steps of [`decap`] after a successful verification and decryption
/// of the packet with sequence number `seq`: window advance, trailer and
/// inner packet checks, ESP removal.
pub fn decap_finish<B: PacketBuffer>(
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
        Mode::Tunnel => check_inner(buf, next_header)?,
        Mode::Transport => rebuild_transport(buf, p, next_header)?,
    }
    Ok(DecapInfo { seq, next_header })
}

/// Checks the inner packet of tunnel mode and trims TFC padding after it.
#[inline]
fn check_inner<B: PacketBuffer>(buf: &mut B, next_header: u8) -> Result<(), EspError> {
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
        _ => {
            return Err(EspError::Malformed("next header does not match inner packet"));
        }
    };
    let extra = pkt.len() - ip_len;
    buf.trim_back(extra)?;
    Ok(())
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
