//! `ikegen`: load-tests an IKEv2 responder (ironsa, strongSwan, a vendor box)
//! with many concurrent handshakes, floods or both, and reports the result.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ironsa_bench::ikegen::options::{Mode, Settings};
use ironsa_bench::ikegen::report::{CpuReport, ResponderReport};
use ironsa_bench::ikegen::responder::Responder;
use ironsa_bench::ikegen::{Progress, plot, run_until};

/// IKEv2 handshake generator: establish, hold, rekey and tear down tunnels,
/// flood with IKE_SA_INIT, or both; report rates, latencies and failures.
#[derive(Parser, Debug)]
#[command(name = "ikegen", version)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    /// TOML file with the same options (kebab-case keys); command-line options override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write rate and latency over time as an SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Start an in-process ironsa responder and test against it (`--remote` is
    /// its bind address; default 127.0.0.1 on a free port).
    #[arg(long)]
    self_test_responder: bool,
    /// Threads of the self-test responder.
    #[arg(long, default_value_t = 1)]
    responder_threads: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ikegen: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut settings = match &cli.config {
        Some(path) => Settings::from_file(path)?.overlay(cli.settings.clone()),
        None => cli.settings.clone(),
    };
    let responder_bind = if cli.self_test_responder {
        let bind = settings
            .remote
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        settings.remote = Some(SocketAddr::new(bind.ip(), bind.port().max(1)));
        Some(bind)
    } else {
        None
    };
    let mut cfg = settings.resolve()?;
    let responder = match responder_bind {
        Some(bind) => {
            let r = Responder::for_generator(&cfg, bind, cli.responder_threads)?;
            cfg.remote = r.addr();
            Some(r)
        }
        None => None,
    };

    let show = !cli.quiet && !cli.json && std::io::stdout().is_terminal();
    let total = match cfg.mode {
        Mode::Flood => (cfg.flood_rate * cfg.duration.as_secs_f64()) as u64,
        _ => cfg.tunnels,
    };
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if show {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar:.cyan/blue}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut window: VecDeque<(f64, u64, u64)> = VecDeque::new();
    let mode = cfg.mode;
    let mut on_progress = |p: &Progress| {
        let done = if mode == Mode::Flood {
            p.flood_sent
        } else {
            p.established + p.failed
        };
        bar.set_position(done);
        window.push_back((p.elapsed_secs, p.established, p.flood_sent));
        while window.len() > 11 {
            window.pop_front();
        }
        let (rate, flood) = match (window.front(), window.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => ((b.1 - a.1) as f64 / (b.0 - a.0), (b.2 - a.2) as f64 / (b.0 - a.0)),
            _ => (0.0, 0.0),
        };
        let mut msg = format!("up {} failed {} | {:.0}/s", p.established, p.failed, rate);
        if mode != Mode::Establish {
            msg.push_str(&format!(" | flood {} ({:.0}/s)", p.flood_sent, flood));
        }
        if p.deleted > 0 {
            msg.push_str(&format!(" | deleted {}", p.deleted));
        }
        bar.set_message(msg);
    };
    // First Ctrl-C: stop and report what happened so far; second: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let result = run_until(&cfg, Some(&mut on_progress), &stop);
    bar.finish_and_clear();
    let mut report = result?;
    if let Some(r) = responder {
        // Give the last responses time to arrive before stopping.
        std::thread::sleep(Duration::from_millis(100));
        let rr = r.stop()?;
        report.responder = Some(ResponderReport {
            established: rr.stats.established,
            children: rr.children,
            init_requests: rr.stats.init_requests,
            cookies_sent: rr.stats.cookies_sent,
            cpu: CpuReport::new(rr.cpu, report.wall_secs, rr.threads),
        });
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, plot::render_svg(&report)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let ok = match mode {
        Mode::Flood => report.flood.as_ref().is_some_and(|f| f.sent > 0),
        _ => report.established > 0 || report.attempted == 0,
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
