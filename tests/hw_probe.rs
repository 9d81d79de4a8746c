//! `ironsa hw-probe`: with the `dpdk` feature it starts EAL with virtual
//! devices, lists ports and crypto devices, reports no inline crypto, and
//! picks the profile that fits; without it, it says the software fastpath applies.

use std::process::Command;

#[test]
fn hw_probe_reports_devices_and_the_fitting_profile() {
    let out = Command::new(env!("CARGO_BIN_EXE_ironsa"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "hw-probe",
            "--",
            "-l",
            "0",
            "--no-huge",
            "-m",
            "256",
            "--no-shconf",
            "--no-pci",
        ])
        .args(["--vdev=net_ring0", "--vdev=crypto_aesni_gcm0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    if cfg!(feature = "dpdk") {
        assert!(text.contains("port 0 net_ring0 driver=net_ring"), "{text}");
        assert!(text.contains("crypto_aesni_gcm0 driver=crypto_aesni_gcm"), "{text}");
        assert!(text.contains("inline ipsec: none (software fallback)"), "{text}");
        assert!(text.contains("profile mlx5-inline: no"), "{text}");
        assert!(text.contains("profile dpdk-aesni: fits"), "{text}");
        assert!(text.contains("recommended profile: dpdk-ipsec-mb"), "{text}");
    } else {
        assert!(text.contains("built without DPDK"), "{text}");
    }
}
