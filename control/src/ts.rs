//! Traffic selector arithmetic: intersection (narrowing, RFC 7296 §2.9) and
//! containment checks, over IPv4 and IPv6 ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::ikev2::TrafficSelector;

fn addr_key(a: IpAddr) -> (u8, u128) {
    match a {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6, u128::from(v6)),
    }
}

fn key_addr(family: u8, v: u128) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// A selector covering a whole subnet and all protocols and ports.
pub fn subnet(addr: IpAddr, prefix: u8) -> TrafficSelector {
    let (family, v) = addr_key(addr);
    let bits: u32 = if family == 4 { 32 } else { 128 };
    let prefix = u32::from(prefix).min(bits);
    let host_bits = bits - prefix;
    let mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let start = v & !mask;
    let end = start | mask;
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 0xffff,
        start_addr: key_addr(family, start),
        end_addr: key_addr(family, end & if family == 4 { 0xffff_ffff } else { u128::MAX }),
    }
}

/// Parses `10.1.0.0/24`, `10.1.0.1`, `::/0`, optionally followed by
/// `[proto/port]` or `[proto/port-port]` as strongSwan writes them (`[udp/500]`, `[6/80-90]`).
pub fn parse_selector(s: &str) -> Result<TrafficSelector, String> {
    let s = s.trim();
    let (net, extra) = match s.find('[') {
        Some(i) => {
            let rest = &s[i + 1..];
            let close = rest.strip_suffix(']').ok_or_else(|| format!("missing ']' in '{s}'"))?;
            (&s[..i], Some(close))
        }
        None => (s, None),
    };
    let (addr, prefix) = match net.split_once('/') {
        Some((a, p)) => (
            a,
            Some(p.parse::<u8>().map_err(|_| format!("bad prefix length in '{s}'"))?),
        ),
        None => (net, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("bad address '{addr}' in '{s}'"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return Err(format!("prefix length {prefix} too long in '{s}'"));
    }
    let mut ts = subnet(ip, prefix);
    if let Some(extra) = extra {
        let (proto, port) = match extra.split_once('/') {
            Some((p, port)) => (p, Some(port)),
            None => (extra, None),
        };
        ts.ip_protocol = match proto.trim() {
            "" | "any" | "%any" => 0,
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "ipv6-icmp" | "icmpv6" => 58,
            "sctp" => 132,
            n => n
                .parse::<u8>()
                .map_err(|_| format!("unknown protocol '{n}' in '{s}'"))?,
        };
        if let Some(port) = port {
            let port = port.trim();
            if !(port.is_empty() || port == "%any") {
                let (a, b) = match port.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (port, port),
                };
                ts.start_port = a.parse().map_err(|_| format!("bad port '{a}' in '{s}'"))?;
                ts.end_port = b.parse().map_err(|_| format!("bad port '{b}' in '{s}'"))?;
                if ts.start_port > ts.end_port {
                    return Err(format!("port range reversed in '{s}'"));
                }
            }
        }
    }
    Ok(ts)
}

/// Renders a selector the way strongSwan lists it: `10.1.0.0/24`, or a range.
pub fn display(ts: &TrafficSelector) -> String {
    let net = match prefix(ts) {
        Some((addr, len)) => format!("{addr}/{len}"),
        None => format!("{}..{}", ts.start_addr, ts.end_addr),
    };
    if ts.ip_protocol == 0 && ts.start_port == 0 && ts.end_port == 0xffff {
        net
    } else if ts.start_port == 0 && ts.end_port == 0xffff {
        format!("{net}[{}]", ts.ip_protocol)
    } else if ts.start_port == ts.end_port {
        format!("{net}[{}/{}]", ts.ip_protocol, ts.start_port)
    } else {
        format!("{net}[{}/{}-{}]", ts.ip_protocol, ts.start_port, ts.end_port)
    }
}

/// The selector's address range as one prefix (network address, length),
/// when it is one (a route can then cover it); protocols and ports are not looked at.
pub fn prefix(ts: &TrafficSelector) -> Option<(IpAddr, u8)> {
    let (f, a) = addr_key(ts.start_addr);
    let (g, b) = addr_key(ts.end_addr);
    let bits: u32 = if f == 4 { 32 } else { 128 };
    let span = b.wrapping_sub(a);
    if f != g || b < a || !(span == u128::MAX || span.wrapping_add(1).is_power_of_two()) || (a & span) != 0 {
        return None;
    }
    let host_bits = if span == u128::MAX {
        128
    } else {
        span.wrapping_add(1).trailing_zeros()
    };
    u8::try_from(bits - host_bits.min(bits))
        .ok()
        .map(|len| (ts.start_addr, len))
}

/// The intersection of two selectors, if not empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let (fa, a_start) = addr_key(a.start_addr);
    let (fa2, a_end) = addr_key(a.end_addr);
    let (fb, b_start) = addr_key(b.start_addr);
    let (fb2, b_end) = addr_key(b.end_addr);
    if fa != fb || fa != fa2 || fb != fb2 {
        return None;
    }
    let proto = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    // OPAQUE ports (start 0xffff, end 0) are kept only if both are opaque.
    let opaque_a = a.start_port == 0xffff && a.end_port == 0;
    let opaque_b = b.start_port == 0xffff && b.end_port == 0;
    let (start_port, end_port) = match (opaque_a, opaque_b) {
        (true, true) => (0xffff, 0),
        (true, false) | (false, true) => return None,
        (false, false) if start_port > end_port => return None,
        _ => (start_port, end_port),
    };
    let start = a_start.max(b_start);
    let end = a_end.min(b_end);
    if start > end {
        return None;
    }
    Some(TrafficSelector {
        ip_protocol: proto,
        start_port,
        end_port,
        start_addr: key_addr(fa, start),
        end_addr: key_addr(fa, end),
    })
}

/// Narrows the peer's proposal against ours: every non-empty pairwise
/// intersection, without duplicates, in the peer's order.
pub fn narrow(peer: &[TrafficSelector], ours: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in peer {
        for o in ours {
            if let Some(i) = intersect(p, o) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// True if `inner` lies entirely within `outer`.
pub fn contains(outer: &TrafficSelector, inner: &TrafficSelector) -> bool {
    intersect(outer, inner).as_ref() == Some(inner)
}

/// True if every selector of `narrowed` lies within some selector of `proposed`.
pub fn all_within(narrowed: &[TrafficSelector], proposed: &[TrafficSelector]) -> bool {
    !narrowed.is_empty() && narrowed.iter().all(|n| proposed.iter().any(|p| contains(p, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let t = parse_selector("10.1.0.0/24").unwrap();
        assert_eq!(t.start_addr, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(t.end_addr, "10.1.0.255".parse::<IpAddr>().unwrap());
        assert_eq!(display(&t), "10.1.0.0/24");
        assert_eq!(display(&parse_selector("0.0.0.0/0").unwrap()), "0.0.0.0/0");
        assert_eq!(display(&parse_selector("::/0").unwrap()), "::/0");
        assert_eq!(display(&parse_selector("10.1.0.7").unwrap()), "10.1.0.7/32");
        let u = parse_selector("10.0.0.0/8[udp/500]").unwrap();
        assert_eq!((u.ip_protocol, u.start_port, u.end_port), (17, 500, 500));
        assert_eq!(display(&u), "10.0.0.0/8[17/500]");
        assert!(parse_selector("10.0.0.0/33").is_err());
        assert!(parse_selector("10.0.0.0/8[tcp/9-1]").is_err());
        assert!(parse_selector("nonsense").is_err());
    }

    #[test]
    fn prefixes_of_ranges() {
        let p = |s: &str| prefix(&parse_selector(s).unwrap()).map(|(a, l)| format!("{a}/{l}"));
        assert_eq!(p("10.1.0.0/24").as_deref(), Some("10.1.0.0/24"));
        assert_eq!(p("::/0").as_deref(), Some("::/0"));
        assert_eq!(p("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
        let mut r = parse_selector("10.1.0.0/24").unwrap();
        r.end_addr = "10.1.0.9".parse().unwrap();
        assert_eq!(prefix(&r), None);
        r.end_addr = "::1".parse().unwrap();
        assert_eq!(prefix(&r), None, "mixed families");
    }

    #[test]
    fn narrowing() {
        let any = parse_selector("0.0.0.0/0").unwrap();
        let net = parse_selector("10.1.0.0/24").unwrap();
        let host = parse_selector("10.1.0.9[tcp/80]").unwrap();
        assert_eq!(intersect(&any, &net), Some(net.clone()));
        assert_eq!(intersect(&net, &host), Some(host.clone()));
        assert!(contains(&net, &host));
        assert!(!contains(&host, &net));
        let other = parse_selector("10.2.0.0/24").unwrap();
        assert_eq!(intersect(&net, &other), None);
        let v6 = parse_selector("::/0").unwrap();
        assert_eq!(intersect(&any, &v6), None);
        assert_eq!(
            narrow(&[any.clone(), v6.clone()], std::slice::from_ref(&net)),
            vec![net.clone()]
        );
        assert!(all_within(std::slice::from_ref(&host), &[other.clone(), net.clone()]));
        assert!(!all_within(&[], &[net]));
        let udp = parse_selector("0.0.0.0/0[udp]").unwrap();
        let tcp = parse_selector("0.0.0.0/0[tcp]").unwrap();
        assert_eq!(intersect(&udp, &tcp), None);
    }
}
