//! Quick Mode client identities (RFC 2409 §5.5, RFC 2407 §4.6.2) as traffic
//! selectors: an address, subnet or range with one protocol and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::ikev2::TrafficSelector;
use crate::wire::isakmp::{IdType, Identification};

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The ID payload body (type, protocol, port, data) for a selector, or why
/// it has no IKEv1 form (a port range other than one port or all ports).
pub fn id_of_selector(ts: &TrafficSelector) -> Result<(IdType, u8, u16, Vec<u8>), String> {
    let port = match (ts.start_port, ts.end_port) {
        (0, 0xffff) => 0,
        (a, b) if a == b => a,
        (a, b) => return Err(format!("port range {a}-{b} has no IKEv1 ID form")),
    };
    let v4 = ts.start_addr.is_ipv4();
    let bytes = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let (start, end) = (to_u128(ts.start_addr), to_u128(ts.end_addr));
    if ts.start_addr.is_ipv4() != ts.end_addr.is_ipv4() || start > end {
        return Err("selector addresses of mixed families or reversed".into());
    }
    let bits = if v4 { 32 } else { 128 };
    let span = end ^ start;
    let is_prefix = (span.wrapping_add(1) & span) == 0 && start & span == 0;
    let (id_type, data) = if start == end {
        (
            if v4 { IdType::IPV4_ADDR } else { IdType::IPV6_ADDR },
            bytes(ts.start_addr),
        )
    } else if is_prefix {
        let host_bits = 128 - span.leading_zeros();
        let mask: u128 = !span & if v4 { 0xffff_ffff } else { u128::MAX };
        let mut d = bytes(ts.start_addr);
        d.extend_from_slice(&if v4 {
            (mask as u32).to_be_bytes().to_vec()
        } else {
            mask.to_be_bytes().to_vec()
        });
        debug_assert!(host_bits <= bits);
        (
            if v4 {
                IdType::IPV4_ADDR_SUBNET
            } else {
                IdType::IPV6_ADDR_SUBNET
            },
            d,
        )
    } else {
        let mut d = bytes(ts.start_addr);
        d.extend_from_slice(&bytes(ts.end_addr));
        (
            if v4 {
                IdType::IPV4_ADDR_RANGE
            } else {
                IdType::IPV6_ADDR_RANGE
            },
            d,
        )
    };
    Ok((id_type, ts.ip_protocol, port, data))
}

fn addr(data: &[u8]) -> Option<IpAddr> {
    match data.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
        _ => None,
    }
}

/// The selector a client ID payload stands for.
pub fn selector_of_id(id: &Identification<'_>) -> Result<TrafficSelector, String> {
    let d = id.data;
    let bad = || format!("{} of {} bytes", id.id_type, d.len());
    let (start_addr, end_addr) = match id.id_type {
        IdType::IPV4_ADDR | IdType::IPV6_ADDR => {
            let a = addr(d).ok_or_else(bad)?;
            if a.is_ipv4() != (id.id_type == IdType::IPV4_ADDR) {
                return Err(bad());
            }
            (a, a)
        }
        IdType::IPV4_ADDR_SUBNET | IdType::IPV6_ADDR_SUBNET => {
            let half = if id.id_type == IdType::IPV4_ADDR_SUBNET { 4 } else { 16 };
            if d.len() != 2 * half {
                return Err(bad());
            }
            let (a, m) = (addr(&d[..half]).ok_or_else(bad)?, addr(&d[half..]).ok_or_else(bad)?);
            let full: u128 = if half == 4 { 0xffff_ffff } else { u128::MAX };
            let mask = to_u128(m);
            let host = !mask & full;
            if host.wrapping_add(1) & host != 0 {
                return Err(format!("{}: mask is not contiguous", id.id_type));
            }
            let start = to_u128(a) & mask;
            let back = |v: u128| {
                if half == 4 {
                    IpAddr::V4(Ipv4Addr::from(v as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(v))
                }
            };
            (back(start), back(start | host))
        }
        IdType::IPV4_ADDR_RANGE | IdType::IPV6_ADDR_RANGE => {
            let half = if id.id_type == IdType::IPV4_ADDR_RANGE { 4 } else { 16 };
            if d.len() != 2 * half {
                return Err(bad());
            }
            let (a, b) = (addr(&d[..half]).ok_or_else(bad)?, addr(&d[half..]).ok_or_else(bad)?);
            if to_u128(a) > to_u128(b) {
                return Err(format!("{}: reversed range", id.id_type));
            }
            (a, b)
        }
        other => return Err(format!("{other} is not a client identity")),
    };
    let (start_port, end_port) = if id.port == 0 { (0, 0xffff) } else { (id.port, id.port) };
    Ok(TrafficSelector {
        ip_protocol: id.protocol,
        start_port,
        end_port,
        start_addr,
        end_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::parse_selector;

    #[test]
    fn selectors_round_trip_through_ids() {
        for s in ["10.1.0.0/16", "192.0.2.7/32", "2001:db8::/48", "0.0.0.0/0"] {
            let ts = parse_selector(s).unwrap();
            let (ty, proto, port, data) = id_of_selector(&ts).unwrap();
            let id = Identification {
                id_type: ty,
                protocol: proto,
                port,
                data: &data,
            };
            assert_eq!(selector_of_id(&id).unwrap(), ts, "{s}");
        }
        let range = TrafficSelector {
            ip_protocol: 6,
            start_port: 443,
            end_port: 443,
            start_addr: "10.0.0.3".parse().unwrap(),
            end_addr: "10.0.0.9".parse().unwrap(),
        };
        let (ty, proto, port, data) = id_of_selector(&range).unwrap();
        assert_eq!((ty, proto, port), (IdType::IPV4_ADDR_RANGE, 6, 443));
        let id = Identification {
            id_type: ty,
            protocol: proto,
            port,
            data: &data,
        };
        assert_eq!(selector_of_id(&id).unwrap(), range);
        let holes = Identification {
            id_type: IdType::IPV4_ADDR_SUBNET,
            protocol: 0,
            port: 0,
            data: &[10, 0, 0, 0, 255, 0, 255, 0],
        };
        assert!(selector_of_id(&holes).is_err());
        assert!(
            id_of_selector(&TrafficSelector {
                start_port: 1,
                end_port: 9,
                ..range
            })
            .is_err()
        );
    }
}
