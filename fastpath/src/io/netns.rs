//! Network namespace isolation for tests and sandboxed runs.

use std::io;

/// Moves the calling thread into a new, empty network namespace (needs
/// CAP_SYS_ADMIN). Sockets and TUN devices it creates afterwards, and child
/// processes it spawns, live there; its loopback is down until set up.
pub fn unshare_network_namespace() -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}
