//! `ironsa`: the IPsec concentrator daemon and its command-line interface.
#![forbid(unsafe_code)]

pub use ironsa::config_file;
mod address_watch;
mod child_sas;
mod cluster_shard;
mod control_socket;
mod daemon;
mod dataplane;
#[cfg(feature = "dpdk")]
mod dpdk_plane;
mod generate;
mod ike_io;
mod keylog;
mod metrics;
mod registry;
mod routing;
mod shard;
mod software;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use control_socket::Request;
use tracing::{error, info, warn};
use tracing_subscriber::{EnvFilter, reload};

/// mimalloc: glibc malloc took a large share of a responder handshake
/// (docs/benchmarks/design-measurements.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ironsa: carrier-grade IPsec concentrator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Control socket of the running daemon.
    #[arg(long, global = true, default_value = config_file::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the daemon in the foreground.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validates a configuration file without starting.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Lists IKE and CHILD SAs.
    Sas {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Lists the virtual-IP pools: size, addresses used, leases by identity.
    Pools {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Shows counters.
    Stats {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Shows the cluster: its nodes, the SPI ranges each serves, their load,
    /// and this node's lag to the store.
    Cluster {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Initiates a connection (all its children, or one with --child) and
    /// waits for the outcome: exits 0 once the IKE SA and the CHILD_SA that
    /// rides in IKE_AUTH are established, else prints why not and exits 1.
    Initiate {
        /// Connection name.
        connection: String,
        /// Only this child (name): on the connection's IKE SA if one is up.
        #[arg(long)]
        child: Option<String>,
        /// Seconds to wait for the outcome (0: return once the request is sent).
        #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
        timeout: f64,
    },
    /// Deletes IKE SAs of a connection, or one by SPI; with --child, CHILD_SAs only.
    Terminate {
        /// Connection name.
        #[arg(long)]
        connection: Option<String>,
        /// Either IKE SPI (hex), ours or the peer's.
        #[arg(long)]
        spi: Option<String>,
        /// A CHILD_SA to delete (SPI in hex, inbound or outbound, or child name); the IKE SA stays.
        #[arg(long)]
        child: Option<String>,
    },
    /// Rekeys an IKE SA, or a CHILD_SA.
    Rekey {
        /// A connection name, or either SPI (hex) of an IKE SA or of a CHILD_SA.
        target: String,
        /// A CHILD_SA of that IKE SA (SPI in hex or child name) instead of the IKE SA.
        #[arg(long)]
        child: Option<String>,
    },
    /// Re-reads the configuration (like SIGHUP).
    Reload,
    /// Changes the log filter (e.g. `debug`, `info,control=trace`).
    LogLevel {
        /// The filter.
        filter: String,
    },
    /// Shows what DPDK sees on this machine (ports, drivers, offloads, security
    /// and crypto devices) and which hardware profile fits.
    HwProbe {
        /// Folder of hardware profiles [default: /usr/share/ironsa/hw-profiles
        /// when installed, else ./hw-profiles of a source checkout].
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// EAL arguments (default: those of the first profile that names a backend of dpdk,
        /// else `-l 0 --no-huge -m 256 --no-shconf`).
        #[arg(last = true)]
        eal_args: Vec<String>,
    },
    /// Writes man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: generate::Artifact,
    },
}

/// The folder `hw-probe` reads: the one given, else the installed
/// profiles, else those of a source checkout run from its root.
fn hw_profile_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let installed = PathBuf::from(config_file::INSTALLED_HW_PROFILES);
        if installed.is_dir() {
            installed
        } else {
            PathBuf::from("hw-profiles")
        }
    })
}

/// The profiles of `dir`, or `None` once the error is printed.
fn load_hw_profiles(dir: &std::path::Path) -> Option<Vec<fastpath::dpdk::profile::HwProfile>> {
    match fastpath::dpdk::profile::HwProfile::load_dir(dir) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("error: hardware profiles: {e} (choose the folder with --profiles)");
            None
        }
    }
}

#[cfg(feature = "dpdk")]
fn hw_probe(profiles: &std::path::Path, eal_args: Vec<String>) -> ExitCode {
    let Some(list) = load_hw_profiles(profiles) else {
        return ExitCode::FAILURE;
    };
    let args = if eal_args.is_empty() {
        vec![
            "-l".into(),
            "0".into(),
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            "--no-shconf".into(),
        ]
    } else {
        eal_args
    };
    match fastpath::dpdk::probe::hw_probe(&args, &list) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: DPDK probe failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "dpdk"))]
fn hw_probe(profiles: &std::path::Path, _eal_args: Vec<String>) -> ExitCode {
    use fastpath::dpdk::profile::BackendKind;
    let Some(list) = load_hw_profiles(profiles) else {
        return ExitCode::FAILURE;
    };
    let software: Vec<&str> = list
        .iter()
        .filter(|p| p.backend == BackendKind::Software)
        .map(|p| p.name.as_str())
        .collect();
    println!(
        "this ironsa was built without DPDK (cargo build --features dpdk); the software fastpath applies: profile {} in {}",
        software.join(", "),
        profiles.display()
    );
    ExitCode::SUCCESS
}

/// `ironsa cluster` as a table.
fn print_cluster(data: &serde_json::Value) {
    let me = data["node"].as_u64();
    let lag = match data["store_lag_ms"].as_u64() {
        Some(ms) => format!("{ms} ms"),
        None => "never answered".into(),
    };
    let state = if data["connected"].as_bool() == Some(true) {
        "reachable"
    } else {
        "UNREACHABLE (new tunnels refused)"
    };
    println!("store: {state}, lag {lag}, {} updates pending", data["pending"]);
    println!("{:>4}  {:<22} {:>8}  ranges", "node", "link", "load");
    for n in data["nodes"].as_array().into_iter().flatten() {
        let id = n["id"].as_u64();
        let (link, load) = match n["info"].as_object() {
            Some(i) => (i["link"].as_str().unwrap_or("?").to_string(), i["load"].to_string()),
            None => ("(dead)".to_string(), "-".to_string()),
        };
        let ranges: Vec<String> = n["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        let this = if id == me { "  (this node)" } else { "" };
        println!(
            "{:>4}  {link:<22} {load:>8}  {}{this}",
            id.map_or("?".into(), |i| i.to_string()),
            ranges.join(",")
        );
    }
}

fn print_sas(data: &serde_json::Value) {
    let Ok(list) = serde_json::from_value::<Vec<registry::SaSummary>>(data.clone()) else {
        println!("{data}");
        return;
    };
    for sa in &list {
        println!(
            "{}: {} {} {} <-> {}[{}] {}_i {}_r shard {}",
            sa.connection,
            sa.state,
            sa.role,
            sa.local,
            sa.remote,
            sa.peer_id.clone().unwrap_or_default(),
            sa.spi_i,
            sa.spi_r,
            sa.shard
        );
        if let Some(a) = &sa.algorithms {
            let nat = match (sa.nat_local, sa.nat_remote) {
                (true, true) => " (NAT-T; NAT in front of both sides)",
                (true, false) => " (NAT-T; NAT in front of us)",
                (false, true) => " (NAT-T; NAT in front of the peer)",
                (false, false) if sa.nat_t => " (NAT-T)",
                (false, false) => "",
            };
            let mobike = if sa.mobike { " MOBIKE" } else { "" };
            println!("  {a}{nat}{mobike}");
        }
        if let Some(x) = &sa.xauth_state {
            match &sa.xauth_user {
                Some(user) => println!("  {x} user {user}"),
                None => println!("  {x}"),
            }
        }
        if !sa.remote_vips.is_empty() {
            println!("  peer virtual IP {}", sa.remote_vips.join(","));
        }
        if !sa.local_vips.is_empty() {
            println!(
                "  local virtual IP {} DNS {}",
                sa.local_vips.join(","),
                sa.dns.join(",")
            );
        }
        for c in &sa.children {
            println!(
                "  {}: {} {} ESP SPIs in {} out {} {}{}{}",
                c.name,
                c.state,
                c.mode,
                c.spi_in,
                c.spi_out,
                c.encr,
                c.integ.as_ref().map(|i| format!("/{i}")).unwrap_or_default(),
                child_key_exchanges(c)
            );
            println!("    {} === {}", c.local_ts.join(","), c.remote_ts.join(","));
            if let Some(k) = &c.counters {
                let no_policy = if k.no_policy > 0 {
                    format!(" ({} without a policy)", k.no_policy)
                } else {
                    String::new()
                };
                println!(
                    "    in {} pkts {} bytes, out {} pkts {} bytes, drops {}{no_policy}",
                    k.packets_in, k.bytes_in, k.packets_out, k.bytes_out, k.drops
                );
            }
        }
    }
    println!("{} IKE SAs", list.len());
}

/// A child's key exchanges for `ironsa sas`, as a proposal writes them:
/// `/x25519-ke1_mlkem768`; nothing for a child keyed from SK_d alone.
fn child_key_exchanges(c: &registry::ChildSummary) -> String {
    if c.key_exchanges.is_empty() {
        return String::new();
    }
    format!("/{}", c.key_exchanges.join("-"))
}

fn print_pools(data: &serde_json::Value) {
    let Ok(list) = serde_json::from_value::<Vec<registry::PoolSummary>>(data.clone()) else {
        println!("{data}");
        return;
    };
    for p in &list {
        println!("{} ({}): {} of {} addresses leased", p.name, p.family, p.used, p.size);
        for l in &p.leases {
            println!("  {} {}", l.address, l.identity);
        }
    }
    println!("{} pools", list.len());
}

fn client(socket: &std::path::Path, req: Request, json: bool, sas: bool) -> ExitCode {
    if sas {
        return client_as(socket, req, json, print_sas);
    }
    client_as(socket, req, json, |data| {
        if let Some(s) = data.as_str() {
            println!("{s}");
        } else {
            println!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
        }
    })
}

/// Sends `req`; prints the answer as JSON, or with `print`.
fn client_as(socket: &std::path::Path, req: Request, json: bool, print: impl Fn(&serde_json::Value)) -> ExitCode {
    match control_socket::call(socket, &req) {
        Ok(r) if r.ok => {
            let data = r.data.unwrap_or(serde_json::Value::Null);
            if json {
                println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
            } else {
                print(&data);
            }
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("error: {}", r.error.unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The data plane the configuration selects.
enum Plane {
    /// TUN + NAT-T UDP + raw ESP sockets.
    Software(Arc<software::SoftwareDataPlane>),
    /// DPDK ports (IKE included).
    #[cfg(feature = "dpdk")]
    Dpdk(Arc<dpdk_plane::DpdkDataPlane>),
    /// IKE only.
    None,
}

fn open_dataplane(cfg: &config_file::DaemonConfig) -> Result<Plane, dataplane::DataPlaneError> {
    match &cfg.fastpath {
        config_file::FastpathBackend::Software => {
            let sw = software::SoftwareConfig {
                tun_name: cfg.tun_name.clone(),
                listen: cfg.listen.clone(),
                nat_port: cfg.nat_port,
                install_routes: cfg.install_routes,
                keylog: cfg.keylog.clone(),
                child_settings: cfg.child_settings.clone(),
                workers: cfg.fastpath_workers,
                socket_buffer: cfg.socket_buffer,
                standing_routes: cfg
                    .pools
                    .iter()
                    .flat_map(|p| &p.ranges)
                    .flat_map(|r| routing::Route::for_range(r.first, r.last))
                    .collect(),
            };
            software::SoftwareDataPlane::open(&sw)
                .map(|dp| Plane::Software(Arc::new(dp)))
                .map_err(dataplane::DataPlaneError::SoftwareStart)
        }
        #[cfg(feature = "dpdk")]
        config_file::FastpathBackend::Dpdk(profile) => {
            dpdk_plane::DpdkDataPlane::open(profile, cfg.child_settings.clone(), cfg.keylog.as_deref())
                .map(|dp| Plane::Dpdk(Arc::new(dp)))
                .map_err(dataplane::DataPlaneError::DpdkStart)
        }
        #[cfg(not(feature = "dpdk"))]
        config_file::FastpathBackend::Dpdk(profile) => Err(dataplane::DataPlaneError::NoDpdk {
            profile: profile.name.clone(),
        }),
        config_file::FastpathBackend::None => Ok(Plane::None),
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    ffi::alloc::keep_freed_memory();
    ffi::alloc::big_blocks_from_the_os();
    let cfg = match config_file::DaemonConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_env("IRONSA_LOG").unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .init();
    for w in &cfg.warnings {
        warn!(file = %config_path.display(), line = w.line, key = %w.key, "{}", w.message);
    }
    let log_reload: daemon::LogReload = Box::new(move |f: &str| {
        config_file::check_log_filter(f)?;
        let new = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(new).map_err(|e| e.to_string())
    });
    let socket = cfg.control_socket.clone();
    let control_group = cfg.control_group.clone();
    let metrics = cfg.metrics;
    let plane = match open_dataplane(&cfg) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (dataplane, nat_sockets): (Arc<dyn dataplane::DataPlane>, _) = match &plane {
        Plane::Software(sw) => match sw.nat_sockets() {
            Ok(s) => (sw.clone(), Some(s)),
            Err(e) => {
                error!("NAT-T sockets: {e}");
                return ExitCode::FAILURE;
            }
        },
        #[cfg(feature = "dpdk")]
        Plane::Dpdk(dp) => (dp.clone(), None),
        Plane::None => (Arc::new(dataplane::NoDataPlane::default()), None),
    };
    let d = match daemon::Daemon::start(cfg, config_path, dataplane, nat_sockets, log_reload) {
        Ok(d) => d,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match &plane {
        Plane::Software(sw) => sw.run(d.ike_sink(), d.lifetime_sink()),
        #[cfg(feature = "dpdk")]
        Plane::Dpdk(dp) => dp.run(d.ike_sink(), d.lifetime_sink()),
        Plane::None => Ok(()),
    };
    if let Err(e) = running {
        error!("cannot start fastpath workers: {e}");
        d.shutdown();
        return ExitCode::FAILURE;
    }
    // The control socket comes last: its appearance tells service managers
    // and scripts that everything else, metrics included, already answers.
    if let Some(addr) = metrics {
        if let Err(e) = metrics::spawn(d.clone(), addr) {
            warn!("metrics endpoint {addr}: {e}");
        }
    }
    if let Err(e) = control_socket::spawn(d.clone(), &socket, control_group.as_ref()) {
        error!("control socket {}: {e}", socket.display());
        d.shutdown();
        return ExitCode::FAILURE;
    }
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            error!("signals: {e}");
            d.shutdown();
            return ExitCode::FAILURE;
        }
    };
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            match d.reload() {
                Ok(m) => info!("{m}"),
                Err(e) => warn!("reload failed: {e}"),
            }
        } else {
            info!("shutting down: deleting SAs");
            d.shutdown();
            let _ = std::fs::remove_file(&socket);
            break;
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => match config_file::DaemonConfig::load(&config) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("warning: {}:{}: {}: {}", config.display(), w.line, w.key, w.message);
                }
                println!(
                    "{}: OK ({} connections, {} shards)",
                    config.display(),
                    c.connections.len(),
                    c.shards
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Sas { json } => client(&cli.socket, Request::Sas, json, true),
        Command::Stats { json } => client(&cli.socket, Request::Stats, json, false),
        Command::Cluster { json } => client_as(&cli.socket, Request::Cluster, json, print_cluster),
        Command::Pools { json } => client_as(&cli.socket, Request::Pools, json, print_pools),
        Command::Initiate {
            connection,
            child,
            timeout,
        } => client(
            &cli.socket,
            Request::Initiate {
                connection,
                child,
                timeout: Some(timeout),
            },
            false,
            false,
        ),
        Command::Terminate { connection, spi, child } => {
            client(&cli.socket, Request::Terminate { connection, spi, child }, false, false)
        }
        Command::Rekey { target, child } => client(&cli.socket, Request::Rekey { target, child }, false, false),
        Command::Reload => client(&cli.socket, Request::Reload, false, false),
        Command::LogLevel { filter } => client(&cli.socket, Request::LogLevel { filter }, false, false),
        Command::HwProbe { profiles, eal_args } => hw_probe(&hw_profile_dir(profiles), eal_args),
        Command::Generate { what } => generate::run(what, Cli::command()),
    }
}
