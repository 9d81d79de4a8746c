//! EAL (Environment Abstraction Layer) initialisation and lcore information.

use std::os::raw::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result, c_string};
use crate::sys;

/// Set by the first call to [`Eal::init`], successful or not: DPDK cannot
/// re-run `rte_eal_init` in the same process.
static INIT_ATTEMPTED: AtomicBool = AtomicBool::new(false);

/// Proof that the DPDK EAL is initialised in this process.
///
/// Every constructor that needs EAL (pools, ports, devices) takes `&Eal`, so
/// none of them can run before initialisation. The token is `Copy`; EAL is
/// never torn down (DPDK cannot be re-initialised after `rte_eal_cleanup`, and
/// the process exit releases its memory).
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialise EAL with command-line style `args` (without the program
    /// name, which is supplied). Works once per process; any later call
    /// returns [`Error::AlreadyInitialized`].
    ///
    /// Example args without hugepages:
    /// `["-l", "0", "--no-huge", "-m", "256", "--no-shconf", "--no-pci", "--vdev=net_ring0"]`.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(c_string("EAL argument", "ironsa")?);
        for arg in args {
            owned.push(c_string("EAL argument", arg.as_ref())?);
        }
        let argc = c_int::try_from(owned.len()).map_err(|_| Error::InvalidArgument("too many EAL arguments".into()))?;
        if INIT_ATTEMPTED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialized);
        }
        // rte_eal_init may permute argv and keep pointers to the strings
        // (e.g. in the devargs list), so both live for the whole process.
        let strings: &'static mut [std::ffi::CString] = Vec::leak(owned);
        let argv: &'static mut [*mut c_char] = Vec::leak(
            strings
                .iter_mut()
                .map(|s| s.as_ptr().cast_mut())
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        // SAFETY: argc/argv describe NUL-terminated strings followed by a NULL
        // entry, all leaked so they outlive EAL; INIT_ATTEMPTED guarantees this
        // runs at most once per process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::from_errno("rte_eal_init"));
        }
        Ok(Eal { _private: () })
    }

    /// Number of lcores EAL is using (`-l`/`-c`).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised (self exists); reads global config.
        unsafe { sys::rte_lcore_count() }
    }

    /// The main lcore id (the thread that called `Eal::init`).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised; reads global config.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// The lcore id of the calling thread, or `None` for a non-EAL thread.
    pub fn current_lcore(&self) -> Option<u32> {
        // SAFETY: reads the per-thread lcore id; no preconditions.
        let id = unsafe { sys::ironsa_lcore_id() };
        (id < sys::RTE_MAX_LCORE).then_some(id)
    }

    /// NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: reads the per-thread socket id; no preconditions.
        unsafe { sys::rte_socket_id() as i32 }
    }

    /// Registers the calling (non-EAL) thread with EAL: it gets a free lcore
    /// id, so per-lcore mempool caches serve its mbuf allocations and frees
    /// (unregistered threads go to the pool's ring every time). DPDK records
    /// the thread's current CPU affinity, so pin the thread first. The id is
    /// released when the returned guard drops (on this thread: the guard is
    /// not `Send`). A thread that already has an lcore id keeps it.
    pub fn register_thread(&self) -> Result<LcoreRegistration> {
        if let Some(id) = self.current_lcore() {
            return Ok(LcoreRegistration {
                id,
                registered: false,
                _not_send: std::marker::PhantomData,
            });
        }
        // SAFETY: EAL is initialised; registers the calling thread only.
        if unsafe { sys::rte_thread_register() } != 0 {
            return Err(Error::from_errno("rte_thread_register"));
        }
        // Built at once, so that an error below still releases the id.
        let mut registration = LcoreRegistration {
            id: sys::RTE_MAX_LCORE,
            registered: true,
            _not_send: std::marker::PhantomData,
        };
        registration.id = self
            .current_lcore()
            .ok_or_else(|| Error::Unsupported("rte_thread_register gave no lcore id".into()))?;
        Ok(registration)
    }

    /// Enabled lcores with their NUMA socket, in id order.
    pub fn lcores(&self) -> Vec<LcoreInfo> {
        (0..sys::RTE_MAX_LCORE)
            .filter(|&id| {
                // SAFETY: id < RTE_MAX_LCORE, as rte_lcore_is_enabled requires.
                unsafe { sys::rte_lcore_is_enabled(id) != 0 }
            })
            .map(|id| LcoreInfo {
                id,
                // SAFETY: id is a valid, enabled lcore.
                socket: unsafe { sys::rte_lcore_to_socket_id(id) },
            })
            .collect()
    }
}

/// One enabled lcore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LcoreInfo {
    /// lcore id.
    pub id: u32,
    /// NUMA socket of the lcore.
    pub socket: u32,
}

/// The lcore id of a thread registered by [`Eal::register_thread`],
/// released when dropped (on the same thread).
#[derive(Debug)]
pub struct LcoreRegistration {
    id: u32,
    registered: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl LcoreRegistration {
    /// The thread's lcore id.
    pub fn lcore(&self) -> u32 {
        self.id
    }
}

impl Drop for LcoreRegistration {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: this thread registered itself (the guard is not Send,
            // so this runs on it); releases its non-EAL lcore id.
            unsafe { sys::rte_thread_unregister() }
        }
    }
}
