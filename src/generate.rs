//! Man pages and shell completions made from the CLI's own clap definitions,
//! so what a package installs cannot drift from what the binary accepts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What `ironsa generate` writes.
#[derive(clap::Subcommand)]
pub enum Artifact {
    /// Man pages (`ironsa.8` and one `ironsa-VERB.8` per subcommand) into a folder.
    Man {
        /// Folder to write the pages into (created if missing).
        dir: PathBuf,
    },
    /// A completion script for a shell, on standard output.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Writes `what` for the command line `cli`.
pub fn run(what: Artifact, cli: clap::Command) -> ExitCode {
    match what {
        Artifact::Man { dir } => match write_man_pages(cli, &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write man pages to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Artifact::Completions { shell } => {
            let mut visible = without_hidden_subcommands(&cli);
            let name = visible.get_name().to_string();
            clap_complete::generate(shell, &mut visible, name, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Section 8: the daemon and its control commands are for administrators.
const MAN_SECTION: &str = "8";

fn write_man_pages(cli: clap::Command, dir: &Path) -> std::io::Result<()> {
    fn write(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            write(sub, dir)?;
        }
        clap_mangen::Man::new(cmd).section(MAN_SECTION).generate_to(dir)?;
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cli = cli.disable_help_subcommand(true);
    // Building gives subcommands their `ironsa-VERB` page names and the global options.
    cli.build();
    write(cli, dir)
}

/// The same command line without its hidden subcommands: clap_complete would
/// offer them (clap_mangen already leaves them out).
fn without_hidden_subcommands(cli: &clap::Command) -> clap::Command {
    let mut visible = clap::Command::new(env!("CARGO_BIN_NAME"))
        .version(env!("CARGO_PKG_VERSION"))
        .args(cli.get_arguments().cloned())
        .subcommands(cli.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(a) = cli.get_about() {
        visible = visible.about(a.clone());
    }
    visible
}
