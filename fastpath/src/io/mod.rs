//! Software I/O backends: batched UDP (port 4500) and raw ESP sockets, and
//! TUN devices (with GSO/GRO offloads in `gso`). Their system calls live
//! in the crate's `sys` module, behind safe wrappers.

pub mod gso;
pub mod mmsg;
pub mod netns;
pub mod raw;
pub mod tun;
pub mod udp;
