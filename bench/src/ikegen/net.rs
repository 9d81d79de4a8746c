//! UDP sockets of the generator and of the self-test responder.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking mio UDP socket bound to `addr` with `buffer`-byte kernel buffers.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<mio::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer > 0 {
        // Best effort: the kernel caps these at net.core.[rw]mem_max.
        let _ = s.set_recv_buffer_size(buffer);
        let _ = s.set_send_buffer_size(buffer);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP socket to {addr}: {e}")))?;
    let std: std::net::UdpSocket = s.into();
    Ok(mio::net::UdpSocket::from_std(std))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_loopback_aliases() {
        let s = bind_udp("127.0.1.7:0".parse().unwrap(), 1 << 20).unwrap();
        let a = s.local_addr().unwrap();
        assert_eq!(a.ip().to_string(), "127.0.1.7");
        assert_ne!(a.port(), 0);
    }
}
