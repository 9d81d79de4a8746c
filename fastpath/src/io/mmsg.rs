//! `recvmmsg`/`sendmmsg` batches on a socket file descriptor, and the
//! planning of UDP GSO sends. The system calls themselves live in the
//! crate's `sys` module, behind the safe functions re-exported here.

use std::net::{IpAddr, SocketAddr};

pub use crate::sys::mmsg::{
    GSO_MAX_BYTES, GSO_MAX_SEGMENTS, GroDatagram, GsoMessage, GsoScratch, MmsgScratch, QueueDrops, enable_rxq_ovfl,
    enable_udp_gro, recv_batch, recv_gro_batch, send_batch, send_gso_batch, set_buffer_sizes,
};

/// The IP of a socket address, for packet metadata.
pub fn ip_of(a: Option<SocketAddr>) -> Option<IpAddr> {
    a.map(|a| a.ip())
}

/// Groups consecutive `(payload, destination)` items into UDP GSO messages
/// (same destination, equal lengths, a shorter or equal last one, at most
/// [`GSO_MAX_SEGMENTS`] and [`GSO_MAX_BYTES`]); appends them to `out`.
pub fn plan_gso(items: &[(&[u8], SocketAddr)], out: &mut Vec<GsoMessage>) {
    let mut i = 0;
    while i < items.len() {
        let (first, dst) = items[i];
        let seg = first.len();
        let mut count = 1;
        let mut bytes = seg;
        while i + count < items.len() && count < GSO_MAX_SEGMENTS && seg > 0 {
            let (d, a) = items[i + count];
            if a != dst || d.len() > seg || bytes + d.len() > GSO_MAX_BYTES {
                break;
            }
            bytes += d.len();
            count += 1;
            if d.len() < seg {
                break; // a shorter segment ends the message
            }
        }
        out.push(GsoMessage {
            dst,
            first: i,
            count,
            seg_size: seg,
        });
        i += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lens: &[usize], dsts: &[u16]) -> Vec<(usize, usize, usize)> {
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&l| vec![0u8; l]).collect();
        let items: Vec<(&[u8], SocketAddr)> = bufs
            .iter()
            .zip(dsts)
            .map(|(b, &p)| (&b[..], SocketAddr::from(([127, 0, 0, 1], p))))
            .collect();
        let mut out = Vec::new();
        plan_gso(&items, &mut out);
        out.iter().map(|m| (m.first, m.count, m.seg_size)).collect()
    }

    #[test]
    fn gso_plan_groups_equal_runs_per_destination() {
        // Equal sizes with a shorter last one form one message.
        assert_eq!(plan(&[100, 100, 100, 40], &[1, 1, 1, 1]), vec![(0, 4, 100)]);
        // A shorter datagram ends the message; a longer one starts a new one.
        assert_eq!(
            plan(&[100, 40, 100, 200, 200], &[1, 1, 1, 1, 1]),
            vec![(0, 2, 100), (2, 1, 100), (3, 2, 200)]
        );
        // Another destination starts a new message.
        assert_eq!(plan(&[100, 100, 100], &[1, 2, 2]), vec![(0, 1, 100), (1, 2, 100)]);
        assert!(plan(&[], &[]).is_empty());
    }

    #[test]
    fn gso_plan_respects_segment_and_byte_limits() {
        let n = GSO_MAX_SEGMENTS + 5;
        let p = plan(&vec![10; n], &vec![1; n]);
        assert_eq!(p, vec![(0, GSO_MAX_SEGMENTS, 10), (GSO_MAX_SEGMENTS, 5, 10)]);
        let p = plan(&[1400; 50], &[1; 50]);
        let per = GSO_MAX_BYTES / 1400;
        assert_eq!(p[0], (0, per, 1400));
        assert_eq!(p.iter().map(|m| m.1).sum::<usize>(), 50);
        // Empty datagrams are never grouped.
        assert_eq!(plan(&[0, 0], &[1, 1]), vec![(0, 1, 0), (1, 1, 0)]);
    }
}
