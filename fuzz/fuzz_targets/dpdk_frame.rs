//! Arbitrary bytes as an Ethernet frame received on a DPDK port: the
//! classification, the address readers and the ARP responder never panic,
//! and every offset they return lies inside the frame (the poll loop trims
//! mbufs by them without further checks).
#![no_main]

use fastpath::dpdk::frame::{self, ETH_HDR_LEN, FrameClass};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    // The first byte picks which destinations count as ours.
    let Some((&pick, f)) = data.split_first() else {
        return;
    };
    let ours = |a: &IpAddr| match pick % 3 {
        0 => true,
        1 => false,
        _ => a.is_loopback() || matches!(a, IpAddr::V4(v) if v.octets()[3] == pick),
    };
    match frame::classify(f, ours) {
        FrameClass::Esp { payload_off, payload_end, .. } | FrameClass::Ike { payload_off, payload_end, .. } => {
            assert!(ETH_HDR_LEN <= payload_off && payload_off <= payload_end && payload_end <= f.len());
            // The poll loop reads the outer addresses of these frames.
            assert!(frame::ip_addrs(f).is_some());
        }
        FrameClass::Ip { ip_end } | FrameClass::Fragment { ip_end } => {
            assert!(ETH_HDR_LEN <= ip_end && ip_end <= f.len());
            assert!(frame::ip_dst(&f[ETH_HDR_LEN..ip_end]).is_some());
        }
        FrameClass::Arp | FrameClass::Keepalive | FrameClass::Other => {}
    }
    let _ = frame::ip_src(f);
    let _ = frame::src_mac(f);
    if frame::arp_request(f).is_some() {
        let mut copy = f.to_vec();
        if frame::make_arp_reply(&mut copy, [2, 0, 0, 0, 0, 1]) {
            assert_eq!(copy.len(), f.len());
        }
    }
});
