//! `ike-responder`: a standalone in-process ironsa IKEv2 responder for load
//! tests with `ikegen` in a separate process (so `time`/`top` show each side's
//! CPU). Accepts any initiator identity and traffic selectors; runs until
//! Ctrl-C, then prints its counters.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use control::endpoint::AdmissionConfig;
use control::proposal::{parse_esp_proposals, parse_ike_proposals};
use ironsa_bench::ikegen::options::MarkerPolicy;
use ironsa_bench::ikegen::responder::{DEFAULT_RESPONDER_ID, Responder, load_test_admission, responder_connection};

/// In-process ironsa IKEv2 responder for ikegen load tests.
#[derive(Parser, Debug)]
#[command(name = "ike-responder", version)]
struct Cli {
    /// Address to listen on (a specific address, not 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1:500")]
    listen: SocketAddr,
    /// Threads (each its own endpoint on a shared SO_REUSEPORT port).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// IKE proposals.
    #[arg(long, default_value = "aes256gcm16-prfsha256-x25519")]
    ike: String,
    /// ESP proposals; "none" refuses CHILD_SAs.
    #[arg(long, default_value = "aes256gcm16")]
    esp: String,
    /// Pre-shared key.
    #[arg(long, default_value = "ikegen-load-test-secret")]
    psk: String,
    /// Our identity.
    #[arg(long, default_value = DEFAULT_RESPONDER_ID)]
    id: String,
    /// Half-open SAs above which COOKIEs are demanded (default: 50,000).
    #[arg(long)]
    cookie_threshold: Option<usize>,
    /// Half-open SAs allowed per source address (default: unlimited).
    #[arg(long)]
    per_source_half_open: Option<usize>,
    /// Non-ESP marker policy (as ikegen's).
    #[arg(long, value_enum, default_value = "auto")]
    marker: MarkerPolicy,
}

fn main() -> ExitCode {
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ike-responder: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let ike = parse_ike_proposals(&cli.ike).map_err(|e| format!("--ike: {e}"))?;
    let esp = if cli.esp == "none" {
        None
    } else {
        Some(parse_esp_proposals(&cli.esp).map_err(|e| format!("--esp: {e}"))?)
    };
    let conn = responder_connection(&cli.id, ike, esp, cli.psk.as_bytes());
    let defaults = load_test_admission();
    let admission = AdmissionConfig {
        cookie_threshold: cli.cookie_threshold.unwrap_or(defaults.cookie_threshold),
        per_source_half_open: cli.per_source_half_open.unwrap_or(defaults.per_source_half_open),
        ..defaults
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let start = Instant::now();
    let r = Responder::start(cli.listen, vec![Arc::new(conn)], admission, cli.threads, cli.marker)?;
    eprintln!(
        "ike-responder listening on {} ({} threads); Ctrl-C to stop",
        r.addr(),
        cli.threads
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = r.stop()?;
    let wall = start.elapsed();
    let s = &result.stats;
    println!(
        "established {}  IKE_SA_INIT requests {}  cookies sent {} (valid {})  rejected {}  dropped: per-source {} capacity {} invalid {}",
        s.established,
        s.init_requests,
        s.cookies_sent,
        s.cookies_valid,
        s.init_rejected,
        s.dropped_per_source,
        s.dropped_capacity,
        s.dropped_invalid
    );
    println!(
        "CPU: user {:.2} s + sys {:.2} s = {:.0}% of {:.1} s wall",
        result.cpu.user_secs,
        result.cpu.sys_secs,
        result.cpu.percent_of(wall),
        wall.as_secs_f64()
    );
    Ok(())
}
