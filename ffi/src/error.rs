//! Error type shared by all DPDK wrappers.

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in a DPDK call or in the arguments given to a wrapper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `Eal::init` was already called in this process (EAL runs once per process).
    #[error("DPDK EAL was already initialised in this process")]
    AlreadyInitialized,
    /// A DPDK function failed; `code` is the positive errno/rte_errno value.
    #[error("{call} failed: {message} (errno {code})")]
    Dpdk {
        /// The DPDK function that failed.
        call: &'static str,
        /// Positive error code (errno or rte_errno).
        code: i32,
        /// `rte_strerror(code)`.
        message: String,
    },
    /// An argument was rejected before calling into DPDK.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A named device, port or capability does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The device does not support what was asked.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// Build an error from a DPDK return code (negative errno) or, when `ret`
    /// is not negative (e.g. NULL-returning calls), from `rte_errno`.
    pub(crate) fn from_ret(call: &'static str, ret: i32) -> Self {
        let code = if ret < 0 { -ret } else { rte_errno() };
        Self::from_code(call, code)
    }

    /// Build an error from the current `rte_errno` (for NULL-returning calls).
    pub(crate) fn from_errno(call: &'static str) -> Self {
        Self::from_code(call, rte_errno())
    }

    /// Build an error from a positive error code.
    pub(crate) fn from_code(call: &'static str, code: i32) -> Self {
        Error::Dpdk {
            call,
            code,
            message: strerror(code),
        }
    }

    /// The DPDK error code, if this error came from DPDK.
    pub fn code(&self) -> Option<i32> {
        match self {
            Error::Dpdk { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Check a DPDK `int` return value (0 or positive = success).
pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(Error::from_ret(call, ret))
    } else {
        Ok(ret)
    }
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through the shim; no preconditions.
    unsafe { crate::sys::ironsa_rte_errno() }
}

/// `rte_strerror(code)` as an owned string (DPDK and libc error codes).
pub fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a
    // NUL-terminated string (static or thread-local) valid until the next call
    // on this thread; we copy it immediately.
    unsafe {
        let ptr = crate::sys::rte_strerror(code);
        if ptr.is_null() {
            return format!("error {code}");
        }
        std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned()
    }
}

/// Convert a Rust string into a C string, rejecting interior NULs.
pub(crate) fn c_string(what: &str, value: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(value).map_err(|_| Error::InvalidArgument(format!("{what} {value:?} contains a NUL byte")))
}

/// Copy a possibly-NULL C string pointer into an owned string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string valid for the call.
pub(crate) unsafe fn owned_c_str(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL and NUL-terminated per the caller's contract.
        unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
    }
}
