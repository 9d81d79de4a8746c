//! Network namespace isolation for tests and sandboxed runs.

use std::io;

/// Moves the calling thread into a new, empty network namespace (needs
/// CAP_SYS_ADMIN). Sockets and TUN devices it creates afterwards, and child
/// processes it spawns, live there; its loopback is down until set up.
pub fn unshare_network_namespace() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and changes only this thread's namespaces.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
