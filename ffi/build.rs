//! Build script for `ironsa-ffi`.
//!
//! Without the `dpdk` feature it does nothing, so the default build needs neither
//! DPDK nor clang. With the feature it:
//! 1. finds the system DPDK (>= 22.11) through pkg-config and emits link flags;
//! 2. compiles `csrc/shim.c`, which exports DPDK's `static inline` fast-path
//!    functions under `ironsa_*` names, and `csrc/imb.c` (AES-GCM on
//!    intel-ipsec-mb's direct API), and links libIPSec_MB;
//! 3. runs bindgen on `csrc/wrapper.h` with an allowlist (no layout tests).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;
    use std::process::Command;

    /// Minimum DPDK release whose API these bindings target.
    const MIN_DPDK: &str = "22.11";

    pub fn build() {
        for file in [
            "csrc/wrapper.h",
            "csrc/shim.h",
            "csrc/shim.c",
            "csrc/imb.h",
            "csrc/imb.c",
        ] {
            println!("cargo:rerun-if-changed={file}");
        }
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

        let lib = pkg_config::Config::new()
            .atleast_version(MIN_DPDK)
            .cargo_metadata(true)
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!("feature `dpdk` needs libdpdk >= {MIN_DPDK} (apt install libdpdk-dev pkg-config): {e}")
            });

        let cflags = dpdk_cflags();

        let mut shim = cc::Build::new();
        shim.file("csrc/shim.c")
            .file("csrc/imb.c")
            .warnings(true)
            .opt_level(2)
            .define("ALLOW_EXPERIMENTAL_API", None);
        for flag in &cflags {
            shim.flag(flag);
        }
        for dir in &lib.include_paths {
            shim.include(dir);
        }
        shim.compile("ironsa_dpdk_shim");
        // intel-ipsec-mb (libipsec-mb-dev) ships no pkg-config file; after the
        // shim, which calls it.
        println!("cargo:rustc-link-lib=IPSec_MB");

        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let mut builder = bindgen::Builder::default()
            .header("csrc/wrapper.h")
            .clang_arg("-DALLOW_EXPERIMENTAL_API")
            .clang_args(cflags.iter().filter(|f| !f.starts_with("-march")))
            .clang_args(lib.include_paths.iter().map(|p| format!("-I{}", p.display())))
            .layout_tests(false)
            .derive_default(true)
            .derive_debug(false)
            .generate_comments(false)
            .prepend_enum_name(false)
            .default_enum_style(bindgen::EnumVariation::Consts)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for func in ALLOWED_FUNCTIONS {
            builder = builder.allowlist_function(func);
        }
        for ty in ALLOWED_TYPES {
            builder = builder.allowlist_type(ty);
        }
        for var in ALLOWED_VARS {
            builder = builder.allowlist_var(var);
        }
        let bindings = builder
            .generate()
            .unwrap_or_else(|e| panic!("bindgen failed on csrc/wrapper.h (is libclang-dev installed?): {e}"));
        bindings
            .write_to_file(out.join("dpdk_bindings.rs"))
            .expect("write dpdk_bindings.rs");
    }

    /// `pkg-config --cflags libdpdk`, split into arguments. The pkg-config crate
    /// drops `-include rte_config.h` and `-march=...`, which DPDK headers need.
    fn dpdk_cflags() -> Vec<String> {
        let output = Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
            .args(["--cflags", "libdpdk"])
            .output()
            .expect("run pkg-config --cflags libdpdk");
        assert!(
            output.status.success(),
            "pkg-config --cflags libdpdk failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("pkg-config output is UTF-8");
        let mut flags = Vec::new();
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            if word == "-include" {
                if let Some(file) = words.next() {
                    flags.push(format!("-include{file}"));
                }
            } else {
                flags.push(word.to_string());
            }
        }
        flags
    }

    /// Exported (non-inline) DPDK functions used by the safe wrappers, plus the shim.
    const ALLOWED_FUNCTIONS: &[&str] = &[
        "ironsa_.*",
        "rte_eal_init",
        "rte_eal_cleanup",
        "rte_eal_process_type",
        "rte_strerror",
        "rte_lcore_count",
        "rte_get_main_lcore",
        "rte_socket_id",
        "rte_lcore_to_socket_id",
        "rte_lcore_is_enabled",
        "rte_get_next_lcore",
        "rte_thread_register",
        "rte_thread_unregister",
        "rte_eth_dev_count_avail",
        "rte_eth_dev_is_valid_port",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_get_name_by_port",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_socket_id",
        "rte_eth_stats_get",
        "rte_eth_stats_reset",
        "rte_eth_promiscuous_enable",
        "rte_eth_macaddr_get",
        "rte_eth_link_get_nowait",
        "rte_eth_dev_get_sec_ctx",
        "rte_eth_dev_rss_hash_conf_get",
        "rte_pktmbuf_pool_create",
        "rte_mempool_free",
        "rte_mempool_avail_count",
        "rte_mempool_in_use_count",
        "rte_ring_create",
        "rte_ring_free",
        "rte_cryptodev_count",
        "rte_cryptodev_get_dev_id",
        "rte_cryptodev_name_get",
        "rte_cryptodev_info_get",
        "rte_cryptodev_driver_id_get",
        "rte_cryptodev_devices_get",
        "rte_cryptodev_socket_id",
        "rte_cryptodev_configure",
        "rte_cryptodev_queue_pair_setup",
        "rte_cryptodev_start",
        "rte_cryptodev_stop",
        "rte_cryptodev_sym_session_pool_create",
        "rte_cryptodev_sym_get_private_session_size",
        "rte_cryptodev_sym_session_free",
        "rte_cryptodev_get_sec_ctx",
        "rte_crypto_op_pool_create",
        "rte_security_capabilities_get",
        "rte_security_session_get_size",
    ];

    const ALLOWED_TYPES: &[&str] = &[
        "rte_flow_item_type",
        "rte_flow_action_type",
        "rte_eth_conf",
        "rte_eth_dev_info",
        "rte_eth_stats",
        "rte_eth_link",
        "rte_ether_addr",
        "rte_eth_rss_conf",
        "rte_cryptodev_info",
        "rte_cryptodev_config",
        "rte_cryptodev_qp_conf",
        "rte_crypto_op_type",
        "rte_crypto_op_status",
        "rte_crypto_aead_operation",
        "rte_security_session_action_type",
        "rte_security_session_protocol",
        "rte_security_ipsec_sa_protocol",
        "rte_security_ipsec_sa_mode",
        "rte_security_ipsec_sa_direction",
        "rte_security_ipsec_tunnel_type",
        "rte_crypto_sym_xform_type",
        "rte_crypto_aead_algorithm",
        "rte_eth_rx_mq_mode",
        "rte_eth_tx_mq_mode",
    ];

    const ALLOWED_VARS: &[&str] = &[
        "ironsa_.*",
        "RTE_ETH_NAME_MAX_LEN",
        "RTE_ETH_RSS_.*",
        "RTE_ETH_RX_OFFLOAD_.*",
        "RTE_ETH_TX_OFFLOAD_.*",
        "RTE_MBUF_DEFAULT_BUF_SIZE",
        "RTE_PKTMBUF_HEADROOM",
        "RTE_MAX_ETHPORTS",
        "RTE_CRYPTODEV_NAME_MAX_LEN",
        "RTE_CRYPTODEV_FF_.*",
        "RTE_ETHDEV_QUEUE_STAT_CNTRS",
        "RING_F_.*",
        "SOCKET_ID_ANY",
        "RTE_MAX_LCORE",
        "RTE_MBUF_F_.*",
    ];
}
