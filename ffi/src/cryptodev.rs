//! Crypto devices (`rte_cryptodev`): enumeration, AES-GCM capability, queue
//! pairs, AEAD sessions and symmetric crypto operations.
//!
//! Ownership: a [`CryptoOp`] owns its source mbuf and keeps its
//! [`SymSession`] alive (an `Arc` stored in the op's private area), so a
//! session is never freed while an operation using it is in a device queue.

use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::eal::Eal;
use crate::error::{Error, Result, c_string, check, owned_c_str};
use crate::mbuf::Mbuf;
use crate::mempool::RawPool;
use crate::sys;

/// Bytes reserved at the start of an op's private area (session reference).
const PRIV_SESSION_BYTES: u16 = 16;
/// Bytes reserved for the IV, right after the session reference.
const PRIV_IV_BYTES: u16 = 16;
/// Largest AAD an op can carry (ESP uses 8 or 12 bytes).
pub const MAX_AAD_LEN: usize = 64;
/// Offset of the AAD inside an op's private area.
const PRIV_AAD_OFFSET: u16 = PRIV_SESSION_BYTES + PRIV_IV_BYTES;
/// Size of the private area of every op from a [`CryptoOpPool`].
const PRIV_SIZE: u16 = PRIV_AAD_OFFSET + MAX_AAD_LEN as u16;
/// Largest burst handled in one call.
pub const MAX_CRYPTO_BURST: usize = 64;
/// Number of crypto device ids (`RTE_CRYPTO_MAX_DEVS`).
const MAX_CRYPTO_DEVS: usize = 64;

/// Devices already configured in this process (once per device: reconfiguring
/// would release queue pairs that [`CryptoQueuePair`] handles still use).
static CONFIGURED: [AtomicBool; MAX_CRYPTO_DEVS] = [const { AtomicBool::new(false) }; MAX_CRYPTO_DEVS];

/// Devices configured and started: PMDs dereference per-device state set up
/// by configuration when a session is created, so sessions need a started device.
static STARTED: [AtomicBool; MAX_CRYPTO_DEVS] = [const { AtomicBool::new(false) }; MAX_CRYPTO_DEVS];

/// Session pools handed to queue pairs, kept alive for the life of the process.
static QP_SESSION_POOLS: Mutex<Vec<SessionPool>> = Mutex::new(Vec::new());

/// A size range from a capability (`min..=max` in steps of `increment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamRange {
    /// Smallest size.
    pub min: u16,
    /// Largest size.
    pub max: u16,
    /// Step between sizes (0 when only `min` is valid).
    pub increment: u16,
}

impl ParamRange {
    /// Whether `size` is one of the sizes in the range.
    pub fn contains(&self, size: u16) -> bool {
        if size < self.min || size > self.max {
            return false;
        }
        if self.increment == 0 {
            return size == self.min;
        }
        (size - self.min) % self.increment == 0
    }

    fn from_raw(r: sys::ironsa_range) -> Self {
        ParamRange {
            min: r.min,
            max: r.max,
            increment: r.increment,
        }
    }
}

/// AES-GCM (AEAD) capability of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AeadCaps {
    /// Supported key sizes in bytes (16, 24, 32).
    pub key_size: ParamRange,
    /// Supported ICV (digest) sizes.
    pub digest_size: ParamRange,
    /// Supported AAD sizes.
    pub aad_size: ParamRange,
    /// Supported IV sizes.
    pub iv_size: ParamRange,
}

/// Static information about a crypto device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoDevInfo {
    /// Device id.
    pub id: u8,
    /// Device name (`crypto_aesni_gcm0`...).
    pub name: String,
    /// Driver name (`crypto_aesni_gcm`, `crypto_openssl`...).
    pub driver: String,
    /// Maximum queue pairs.
    pub max_queue_pairs: u32,
    /// Feature flags (`RTE_CRYPTODEV_FF_*`).
    pub feature_flags: u64,
    /// AES-GCM support, if any.
    pub aes_gcm: Option<AeadCaps>,
    /// Whether the device exposes an rte_security context (lookaside protocol).
    pub has_security_ctx: bool,
}

/// A crypto device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoDev {
    id: u8,
}

impl CryptoDev {
    /// All crypto devices, in id order.
    pub fn all(_eal: &Eal) -> Vec<CryptoDev> {
        // SAFETY: EAL initialised; returns the number of devices.
        let count = unsafe { sys::rte_cryptodev_count() };
        (0..count).map(|id| CryptoDev { id }).collect()
    }

    /// The device with id `id`.
    pub fn by_id(eal: &Eal, id: u8) -> Result<CryptoDev> {
        Self::all(eal)
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::NotFound(format!("cryptodev {id}")))
    }

    /// The device named `name` (e.g. `crypto_aesni_gcm0`).
    pub fn by_name(_eal: &Eal, name: &str) -> Result<CryptoDev> {
        let cname = c_string("cryptodev name", name)?;
        // SAFETY: cname is NUL-terminated.
        let id = unsafe { sys::rte_cryptodev_get_dev_id(cname.as_ptr()) };
        u8::try_from(id)
            .map(|id| CryptoDev { id })
            .map_err(|_| Error::NotFound(format!("cryptodev named {name:?}")))
    }

    /// Devices driven by `driver` (e.g. `crypto_openssl`).
    pub fn by_driver(_eal: &Eal, driver: &str) -> Result<Vec<CryptoDev>> {
        let cname = c_string("cryptodev driver", driver)?;
        let mut ids = [0u8; 64];
        // SAFETY: cname NUL-terminated; ids has room for 64 entries.
        let n = unsafe { sys::rte_cryptodev_devices_get(cname.as_ptr(), ids.as_mut_ptr(), 64) };
        Ok(ids[..usize::from(n).min(ids.len())]
            .iter()
            .map(|&id| CryptoDev { id })
            .collect())
    }

    /// Device id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Device name.
    pub fn name(&self) -> String {
        // SAFETY: self.id is a valid device; the name is a static string or NULL.
        unsafe { owned_c_str(sys::rte_cryptodev_name_get(self.id)) }
    }

    /// Device information, including AES-GCM capability.
    pub fn info(&self) -> CryptoDevInfo {
        let mut info = sys::rte_cryptodev_info::default();
        // SAFETY: info is a valid out struct.
        unsafe { sys::rte_cryptodev_info_get(self.id, &mut info) };
        CryptoDevInfo {
            id: self.id,
            name: self.name(),
            // SAFETY: driver_name is NULL or a static NUL-terminated string.
            driver: unsafe { owned_c_str(info.driver_name) },
            max_queue_pairs: info.max_nb_queue_pairs,
            feature_flags: info.feature_flags,
            aes_gcm: self.aes_gcm_caps(),
            // SAFETY: self.id is a valid device; NULL when none.
            has_security_ctx: !unsafe { sys::rte_cryptodev_get_sec_ctx(self.id) }.is_null(),
        }
    }

    /// AES-GCM capability, or `None` if the device does not do AES-GCM.
    pub fn aes_gcm_caps(&self) -> Option<AeadCaps> {
        let mut caps = sys::ironsa_aead_caps::default();
        // SAFETY: caps is a valid out struct.
        let ret = unsafe { sys::ironsa_cryptodev_aes_gcm_caps(self.id, &mut caps) };
        (ret == 0).then(|| AeadCaps {
            key_size: ParamRange::from_raw(caps.key_size),
            digest_size: ParamRange::from_raw(caps.digest_size),
            aad_size: ParamRange::from_raw(caps.aad_size),
            iv_size: ParamRange::from_raw(caps.iv_size),
        })
    }

    /// Whether [`CryptoDev::configure_and_start`] succeeded for this device.
    pub fn is_started(&self) -> bool {
        STARTED
            .get(usize::from(self.id))
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// NUMA socket of the device (`-1` when unknown).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: self.id is a valid device.
        unsafe { sys::rte_cryptodev_socket_id(self.id) }
    }

    /// Size of this device's private session data.
    pub fn session_private_size(&self) -> u32 {
        // SAFETY: self.id is a valid device.
        unsafe { sys::rte_cryptodev_sym_get_private_session_size(self.id) }
    }

    /// Configure the device with `queue_pairs` queue pairs, set each up with
    /// `descriptors` entries, and start it. Once per device per process; a
    /// second call fails. Returns one handle per queue pair.
    pub fn configure_and_start(
        &self,
        queue_pairs: u16,
        descriptors: u32,
        sessions: &SessionPool,
    ) -> Result<Vec<CryptoQueuePair>> {
        if queue_pairs == 0 {
            return Err(Error::InvalidArgument("0 crypto queue pairs".into()));
        }
        let info = self.info();
        if u32::from(queue_pairs) > info.max_queue_pairs {
            return Err(Error::Unsupported(format!(
                "{} supports {} queue pairs, asked {queue_pairs}",
                info.name, info.max_queue_pairs
            )));
        }
        let slot = CONFIGURED
            .get(usize::from(self.id))
            .ok_or_else(|| Error::NotFound(format!("cryptodev {}", self.id)))?;
        if slot.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument(format!(
                "{} is already configured (once per process)",
                info.name
            )));
        }
        QP_SESSION_POOLS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(sessions.clone());
        let socket = self.socket_id();
        let mut conf = sys::rte_cryptodev_config {
            socket_id: socket,
            nb_queue_pairs: queue_pairs,
            ff_disable: 0,
        };
        // SAFETY: conf is fully initialised; DPDK copies it. The device must
        // be stopped, which DPDK checks and reports as an error.
        check("rte_cryptodev_configure", unsafe {
            sys::rte_cryptodev_configure(self.id, &mut conf)
        })?;
        for qp in 0..queue_pairs {
            let qp_conf = sys::rte_cryptodev_qp_conf {
                nb_descriptors: descriptors,
                mp_session: sessions.pool.as_ptr(),
            };
            // SAFETY: qp < nb_queue_pairs; qp_conf is valid; the session pool
            // outlives its use (it leaks itself while sessions are alive).
            check("rte_cryptodev_queue_pair_setup", unsafe {
                sys::rte_cryptodev_queue_pair_setup(self.id, qp, &qp_conf, socket)
            })?;
        }
        // SAFETY: device configured with its queue pairs.
        check("rte_cryptodev_start", unsafe { sys::rte_cryptodev_start(self.id) })?;
        STARTED[usize::from(self.id)].store(true, Ordering::SeqCst);
        Ok((0..queue_pairs)
            .map(|qp| CryptoQueuePair { dev: self.id, qp })
            .collect())
    }

    /// Stop the device.
    pub fn stop(&self) {
        // SAFETY: self.id is a valid device; stopping a stopped device is a no-op.
        unsafe { sys::rte_cryptodev_stop(self.id) }
    }
}

/// A pool of symmetric sessions usable by the devices it was sized for.
#[derive(Debug, Clone)]
pub struct SessionPool {
    pool: Arc<RawPool>,
}

impl SessionPool {
    /// Create a pool of `count` sessions large enough for every device in
    /// `devices`.
    pub fn new(_eal: &Eal, name: &str, count: u32, devices: &[CryptoDev], socket: i32) -> Result<SessionPool> {
        let elt_size = devices
            .iter()
            .map(CryptoDev::session_private_size)
            .max()
            .ok_or_else(|| Error::InvalidArgument("session pool for no device".into()))?;
        let cname = c_string("session pool name", name)?;
        // SAFETY: EAL initialised; cname NUL-terminated.
        let ptr = unsafe { sys::rte_cryptodev_sym_session_pool_create(cname.as_ptr(), count, elt_size, 0, 0, socket) };
        Ok(SessionPool {
            pool: Arc::new(RawPool::from_created("rte_cryptodev_sym_session_pool_create", ptr)?),
        })
    }
}

/// Direction of an AEAD session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadDirection {
    /// Encrypt and generate the ICV.
    Encrypt,
    /// Verify the ICV and decrypt.
    Decrypt,
}

struct SessionInner {
    dev: u8,
    ptr: NonNull<c_void>,
    _pool: Arc<RawPool>,
}

// SAFETY: a session is immutable after creation; DPDK lets any lcore use it.
unsafe impl Send for SessionInner {}
// SAFETY: see Send.
unsafe impl Sync for SessionInner {}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // SAFETY: last reference (Arc), so no op in flight uses the session;
        // it was created on `dev` from `_pool`, which is still alive.
        unsafe { sys::rte_cryptodev_sym_session_free(self.dev, self.ptr.as_ptr()) };
    }
}

/// A symmetric AES-GCM session bound to one device. Cheap to clone.
#[derive(Clone)]
pub struct SymSession {
    inner: Arc<SessionInner>,
    direction: AeadDirection,
    iv_len: u16,
    aad_len: u16,
    digest_len: u16,
}

impl std::fmt::Debug for SymSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymSession")
            .field("dev", &self.inner.dev)
            .field("direction", &self.direction)
            .field("iv_len", &self.iv_len)
            .field("aad_len", &self.aad_len)
            .field("digest_len", &self.digest_len)
            .finish()
    }
}

impl SymSession {
    /// Create an AES-GCM session on `dev` with `key` (16/24/32 bytes), IV,
    /// AAD and ICV lengths. The device copies the key; callers should keep
    /// their copy in a zeroizing container.
    pub fn aes_gcm(
        dev: &CryptoDev,
        pool: &SessionPool,
        direction: AeadDirection,
        key: &[u8],
        iv_len: u16,
        aad_len: u16,
        digest_len: u16,
    ) -> Result<SymSession> {
        if !dev.is_started() {
            return Err(Error::InvalidArgument(format!(
                "{}: configure and start the device before creating sessions",
                dev.name()
            )));
        }
        let caps = dev
            .aes_gcm_caps()
            .ok_or_else(|| Error::Unsupported(format!("{} has no AES-GCM", dev.name())))?;
        let key_len =
            u16::try_from(key.len()).map_err(|_| Error::InvalidArgument(format!("key of {} bytes", key.len())))?;
        for (what, size, range) in [
            ("key", key_len, caps.key_size),
            ("IV", iv_len, caps.iv_size),
            ("AAD", aad_len, caps.aad_size),
            ("ICV", digest_len, caps.digest_size),
        ] {
            if !range.contains(size) {
                return Err(Error::Unsupported(format!(
                    "{} AES-GCM {what} of {size} bytes (supported {range:?})",
                    dev.name()
                )));
            }
        }
        if iv_len > PRIV_IV_BYTES || usize::from(aad_len) > MAX_AAD_LEN {
            return Err(Error::InvalidArgument(format!(
                "IV {iv_len} / AAD {aad_len} bytes exceed the op area ({PRIV_IV_BYTES} / {MAX_AAD_LEN})"
            )));
        }
        // SAFETY: pure computation of a constant offset.
        let iv_offset = unsafe { sys::ironsa_crypto_op_priv_offset() } + PRIV_SESSION_BYTES;
        // SAFETY: key points at key_len bytes for the call; the PMD copies the
        // key; pool is a live session pool sized for this device.
        let ptr = unsafe {
            sys::ironsa_cryptodev_aes_gcm_session(
                dev.id,
                pool.pool.as_ptr(),
                i32::from(direction == AeadDirection::Encrypt),
                key.as_ptr(),
                key_len,
                iv_offset,
                iv_len,
                digest_len,
                aad_len,
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::from_errno("rte_cryptodev_sym_session_create"))?;
        Ok(SymSession {
            inner: Arc::new(SessionInner {
                dev: dev.id,
                ptr,
                _pool: Arc::clone(&pool.pool),
            }),
            direction,
            iv_len,
            aad_len,
            digest_len,
        })
    }

    /// Direction of the session.
    pub fn direction(&self) -> AeadDirection {
        self.direction
    }

    /// ICV length in bytes.
    pub fn digest_len(&self) -> u16 {
        self.digest_len
    }

    /// IV length in bytes.
    pub fn iv_len(&self) -> u16 {
        self.iv_len
    }

    /// AAD length in bytes.
    pub fn aad_len(&self) -> u16 {
        self.aad_len
    }

    /// Id of the device the session was created on.
    pub fn device(&self) -> u8 {
        self.inner.dev
    }

    /// The raw session pointer (still owned by `self`).
    pub(crate) fn as_raw(&self) -> *mut c_void {
        self.inner.ptr.as_ptr()
    }
}

/// A pool of symmetric crypto operations (with room for IV and AAD).
#[derive(Debug)]
pub struct CryptoOpPool {
    pool: RawPool,
}

impl CryptoOpPool {
    /// Create a pool of `count` ops with a per-lcore cache of `cache`.
    pub fn new(_eal: &Eal, name: &str, count: u32, cache: u32, socket: i32) -> Result<CryptoOpPool> {
        let cname = c_string("crypto op pool name", name)?;
        // SAFETY: EAL initialised; cname NUL-terminated.
        let ptr = unsafe {
            sys::rte_crypto_op_pool_create(
                cname.as_ptr(),
                sys::RTE_CRYPTO_OP_TYPE_SYMMETRIC,
                count,
                cache,
                PRIV_SIZE,
                socket,
            )
        };
        Ok(CryptoOpPool {
            pool: RawPool::from_created("rte_crypto_op_pool_create", ptr)?,
        })
    }

    /// Allocate one symmetric op.
    pub fn alloc(&self) -> Result<CryptoOp> {
        // SAFETY: self.pool is a live symmetric op pool.
        let op = unsafe { sys::ironsa_crypto_sym_op_alloc(self.pool.as_ptr()) };
        let ptr =
            NonNull::new(op).ok_or_else(|| Error::from_code("rte_crypto_op_alloc", crate::mempool::libc_enomem()))?;
        let mut op = CryptoOp { ptr };
        op.session_slot_write(std::ptr::null());
        Ok(op)
    }
}

/// Where an AEAD operation reads and writes inside its mbuf (first segment).
#[derive(Debug, Clone, Copy)]
pub struct AeadParams<'a> {
    /// Offset of the data to encrypt/decrypt.
    pub data_offset: u32,
    /// Length of the data to encrypt/decrypt.
    pub data_len: u32,
    /// Offset of the ICV: written on encrypt, verified on decrypt.
    pub digest_offset: u32,
    /// IV (nonce); its length must match the session.
    pub iv: &'a [u8],
    /// AAD; its length must match the session.
    pub aad: &'a [u8],
}

/// Outcome of a processed operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    /// Processed successfully.
    Success,
    /// Not processed (yet).
    NotProcessed,
    /// ICV verification failed (decrypt).
    AuthFailed,
    /// The session was invalid.
    InvalidSession,
    /// Invalid arguments.
    InvalidArgs,
    /// Other device error.
    Error,
    /// A status value this crate does not know.
    Other(i32),
}

/// One symmetric crypto operation, owning its source mbuf and a reference to
/// its session. Dropping it frees both (the mbuf) and releases the session.
pub struct CryptoOp {
    ptr: NonNull<sys::rte_crypto_op>,
}

// SAFETY: uniquely owned; op pools and mbuf pools are MP/MC-safe and the
// session reference is an Arc of a Send+Sync value.
unsafe impl Send for CryptoOp {}

impl std::fmt::Debug for CryptoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoOp").field("status", &self.status()).finish()
    }
}

impl CryptoOp {
    fn priv_area(&mut self) -> *mut u8 {
        // SAFETY: ops come from a CryptoOpPool whose private area is PRIV_SIZE bytes.
        unsafe { sys::ironsa_crypto_op_priv(self.ptr.as_ptr()) }
    }

    fn session_slot_read(&mut self) -> *const SessionInner {
        // SAFETY: the first PRIV_SESSION_BYTES of the private area hold a
        // (possibly unaligned) pointer written by session_slot_write.
        unsafe { self.priv_area().cast::<*const SessionInner>().read_unaligned() }
    }

    fn session_slot_write(&mut self, p: *const SessionInner) {
        // SAFETY: see session_slot_read; the slot is ours to write.
        unsafe { self.priv_area().cast::<*const SessionInner>().write_unaligned(p) }
    }

    /// Release the session reference held by the op, if any.
    fn release_session(&mut self) {
        let p = self.session_slot_read();
        if !p.is_null() {
            self.session_slot_write(std::ptr::null());
            // SAFETY: p came from Arc::into_raw in set_aead and is released once.
            drop(unsafe { Arc::from_raw(p) });
        }
    }

    /// Prepare an AEAD operation on `mbuf` as described by `params`. The op
    /// takes ownership of the mbuf (any previous one is freed). If `params`
    /// does not fit the session or the mbuf, the given mbuf is freed, an
    /// error is returned and the op is left unchanged.
    pub fn set_aead(&mut self, session: &SymSession, mbuf: Mbuf, params: &AeadParams<'_>) -> Result<()> {
        let AeadParams {
            data_offset,
            data_len,
            digest_offset,
            iv,
            aad,
        } = *params;
        if iv.len() != usize::from(session.iv_len) || aad.len() != usize::from(session.aad_len) {
            return Err(Error::InvalidArgument(format!(
                "IV {} / AAD {} bytes, session expects {} / {}",
                iv.len(),
                aad.len(),
                session.iv_len,
                session.aad_len
            )));
        }
        let data_end = u64::from(data_offset) + u64::from(data_len);
        let digest_end = u64::from(digest_offset) + u64::from(session.digest_len);
        let len = u64::from(mbuf.data_len());
        if data_end > len || digest_end > len {
            return Err(Error::InvalidArgument(format!(
                "data {data_offset}+{data_len} / ICV {digest_offset}+{} outside the {len}-byte mbuf",
                session.digest_len
            )));
        }
        drop(self.take_mbuf());
        self.release_session();
        let area = self.priv_area();
        // SAFETY: IV and AAD fit their reserved regions (checked at session
        // creation); the private area is PRIV_SIZE bytes and ours to write.
        unsafe {
            std::ptr::copy_nonoverlapping(iv.as_ptr(), area.add(usize::from(PRIV_SESSION_BYTES)), iv.len());
            std::ptr::copy_nonoverlapping(aad.as_ptr(), area.add(usize::from(PRIV_AAD_OFFSET)), aad.len());
        }
        let m = mbuf.into_raw();
        // SAFETY: op, session and mbuf are valid; offsets were checked against
        // the single-segment data length; the op now owns the mbuf.
        let ret = unsafe {
            sys::ironsa_crypto_op_set_aead(
                self.ptr.as_ptr(),
                session.inner.ptr.as_ptr(),
                m.as_ptr(),
                data_offset,
                data_len,
                digest_offset,
                PRIV_AAD_OFFSET,
            )
        };
        if ret != 0 {
            // SAFETY: the op did not take the mbuf; give it back to an owner.
            drop(unsafe { Mbuf::from_raw(m) });
            return Err(Error::from_ret("rte_crypto_op_attach_sym_session", ret));
        }
        self.session_slot_write(Arc::into_raw(Arc::clone(&session.inner)));
        Ok(())
    }

    /// Whether the op is ready for `dev`: it has a session created on `dev`
    /// and a source mbuf (set by [`CryptoOp::set_aead`], not taken back).
    fn is_ready_for(&mut self, dev: u8) -> bool {
        let session = self.session_slot_read();
        // SAFETY: self.ptr is a valid op.
        let m = unsafe { sys::ironsa_crypto_op_m_src(self.ptr.as_ptr()) };
        // SAFETY: a non-NULL slot holds a live Arc<SessionInner> owned by the op.
        !session.is_null() && !m.is_null() && unsafe { (*session).dev } == dev
    }

    /// Status after dequeue.
    pub fn status(&self) -> OpStatus {
        // SAFETY: self.ptr is a valid op.
        match unsafe { sys::ironsa_crypto_op_status(self.ptr.as_ptr()) } {
            0 => OpStatus::Success,
            1 => OpStatus::NotProcessed,
            2 => OpStatus::AuthFailed,
            3 => OpStatus::InvalidSession,
            4 => OpStatus::InvalidArgs,
            5 => OpStatus::Error,
            other => OpStatus::Other(other),
        }
    }

    /// Data of the attached source mbuf (first segment), if any.
    pub fn mbuf_data(&self) -> Option<&[u8]> {
        // SAFETY: self.ptr is a valid op; m_src is NULL or an mbuf it owns.
        let m = unsafe { sys::ironsa_crypto_op_m_src(self.ptr.as_ptr()) };
        if m.is_null() {
            return None;
        }
        // SAFETY: m is a valid mbuf owned by the op, which &self keeps alive
        // and unmodified; mtod points at data_len initialised bytes.
        Some(unsafe {
            std::slice::from_raw_parts(
                sys::ironsa_pktmbuf_mtod(m),
                usize::from(sys::ironsa_pktmbuf_data_len(m)),
            )
        })
    }

    /// Detach and return the source mbuf.
    pub fn take_mbuf(&mut self) -> Option<Mbuf> {
        // SAFETY: self.ptr is a valid op.
        let m = unsafe { sys::ironsa_crypto_op_m_src(self.ptr.as_ptr()) };
        let m = NonNull::new(m)?;
        // SAFETY: clear the op's pointer, then ownership moves to the Mbuf.
        unsafe { sys::ironsa_crypto_op_set_m_src(self.ptr.as_ptr(), std::ptr::null_mut()) };
        // SAFETY: the op owned this mbuf exclusively.
        Some(unsafe { Mbuf::from_raw(m) })
    }
}

impl Drop for CryptoOp {
    fn drop(&mut self) {
        drop(self.take_mbuf());
        self.release_session();
        // SAFETY: the op is owned and not in any device queue.
        unsafe { sys::ironsa_crypto_op_free(self.ptr.as_ptr()) };
    }
}

/// One queue pair of a started crypto device. Bursts take `&mut self`: a
/// queue pair is not thread-safe.
#[derive(Debug)]
pub struct CryptoQueuePair {
    dev: u8,
    qp: u16,
}

impl CryptoQueuePair {
    /// Device id.
    pub fn device(&self) -> u8 {
        self.dev
    }

    /// Queue pair id.
    pub fn queue_pair(&self) -> u16 {
        self.qp
    }

    /// Enqueue ops from the front of `ops` (up to [`MAX_CRYPTO_BURST`]);
    /// enqueued ops are removed from `ops`. Returns how many. Enqueueing stops
    /// before the first op that is not ready for this device (no
    /// [`CryptoOp::set_aead`], mbuf taken back, or session of another device):
    /// such an op stays at the front of `ops`.
    pub fn enqueue_burst(&mut self, ops: &mut Vec<CryptoOp>) -> usize {
        let mut raw = [std::ptr::null_mut::<sys::rte_crypto_op>(); MAX_CRYPTO_BURST];
        let mut n = 0;
        for (slot, op) in raw.iter_mut().zip(ops.iter_mut()) {
            if !op.is_ready_for(self.dev) {
                break;
            }
            *slot = op.ptr.as_ptr();
            n += 1;
        }
        // SAFETY: raw holds n valid prepared ops; &mut self makes this the
        // only user of (dev, qp).
        let done = unsafe { sys::ironsa_cryptodev_enqueue_burst(self.dev, self.qp, raw.as_mut_ptr(), n as u16) };
        let done = usize::from(done).min(n);
        // The device owns the enqueued ops until they are dequeued.
        for op in ops.drain(..done) {
            std::mem::forget(op);
        }
        done
    }

    /// Dequeue up to `max` processed ops (capped at [`MAX_CRYPTO_BURST`]),
    /// appending them to `out`. Check each op's [`CryptoOp::status`].
    pub fn dequeue_burst(&mut self, out: &mut Vec<CryptoOp>, max: usize) -> usize {
        let n = max.min(MAX_CRYPTO_BURST);
        let mut raw = [std::ptr::null_mut::<sys::rte_crypto_op>(); MAX_CRYPTO_BURST];
        // SAFETY: raw has room for n ops; &mut self makes this the only user.
        let got = unsafe { sys::ironsa_cryptodev_dequeue_burst(self.dev, self.qp, raw.as_mut_ptr(), n as u16) };
        let got = usize::from(got).min(n);
        for &op in &raw[..got] {
            if let Some(ptr) = NonNull::new(op) {
                // Ops are only ever enqueued from owned CryptoOps: ownership
                // comes back with the dequeue.
                out.push(CryptoOp { ptr });
            }
        }
        got
    }
}
