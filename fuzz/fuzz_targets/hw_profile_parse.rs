//! Arbitrary text as a hardware profile (`hw-profiles/*.toml`): an error or a
//! validated profile, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(profile) = fastpath::dpdk::profile::HwProfile::from_toml(text) {
            // Whatever parses must also pass validation again unchanged.
            assert!(profile.validate().is_ok());
        }
    }
});
