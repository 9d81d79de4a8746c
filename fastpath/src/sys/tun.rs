//! The ioctls that attach an opened `/dev/net/tun` file to an interface
//! and set its offloads.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `struct ifreq` as `TUNSETIFF` reads it: name, flags, padding to 40 bytes.
#[repr(C)]
pub(crate) struct IfReqFlags {
    pub(crate) name: [u8; libc::IFNAMSIZ],
    pub(crate) flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReqFlags {
    /// A request for interface `name` (at most `IFNAMSIZ - 1` bytes, so
    /// that it stays NUL-terminated) with `flags`.
    pub(crate) fn new(name: &str, flags: libc::c_short) -> io::Result<Self> {
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        let slot = req
            .name
            .get_mut(..name.len())
            .filter(|_| name.len() < libc::IFNAMSIZ)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?} too long")))?;
        slot.copy_from_slice(name.as_bytes());
        Ok(req)
    }
}

/// `TUNSETIFF`: attaches `file` to the interface `req` names (creating it);
/// the kernel writes the name it chose back into `req`.
pub(crate) fn set_iff(file: &File, req: &mut IfReqFlags) -> io::Result<()> {
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReqFlags
    // lays out (name, then the flags member of the union, padded to size);
    // `req` is a live exclusive reference for the duration of the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, req as *mut IfReqFlags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TUNSETOFFLOAD`: asks for the `TUN_F_*` offloads `bits`.
pub(crate) fn set_offload(file: &File, bits: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes the offload bits by value; no memory is passed.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(bits)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
