//! The data plane's raw calls into C, each behind a safe wrapper: the
//! aws-lc-sys AEAD context kept inline in SA entries ([`aead_ctx`]), the
//! batched socket calls (`recvmmsg`, `sendmmsg`, their control messages and
//! `setsockopt`, [`mmsg`]) and the TUN device ioctls ([`tun`]). `madvise`
//! lives with the huge-page arrays it advises (`crate::huge`), the DPDK
//! calls in the `ffi` crate.

pub(crate) mod aead_ctx;
pub(crate) mod mmsg;
pub(crate) mod tun;
