//! The data plane's raw calls into C, each behind a safe wrapper: the
//! aws-lc-sys AEAD context kept inline in SA entries ([`aead_ctx`]) and the
//! TUN device ioctls ([`tun`]). The batched socket calls (`recvmmsg`,
//! `sendmmsg` and their control messages) live in [`crate::io::mmsg`],
//! `madvise` with the huge-page arrays it advises (`crate::huge`), the DPDK
//! calls in the `ffi` crate.

pub(crate) mod aead_ctx;
pub(crate) mod tun;
