//! Software I/O backends: batched UDP (port 4500) and raw ESP sockets, and
//! TUN devices (with GSO/GRO offloads in `gso`). Unsafe system calls live
//! only in `mmsg` (here) and in `crate::sys`.

pub mod gso;
// The batched socket calls: the kernel reads and writes message arrays that
// point into this module's scratch buffers.
#[allow(unsafe_code)]
pub mod mmsg;
pub mod netns;
pub mod raw;
pub mod tun;
pub mod udp;
