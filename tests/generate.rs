//! `ironsa generate`: the man pages and shell completions a package installs
//! come from the CLI's clap definitions, one page per visible subcommand.

use std::process::Command;

fn ironsa() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ironsa"))
}

/// The visible subcommands, as `ironsa --help` lists them.
fn visible_subcommands() -> Vec<String> {
    let out = ironsa().arg("--help").output().expect("ironsa --help runs");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|verb| *verb != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn man_pages_cover_every_visible_subcommand() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let out = ironsa()
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .expect("ironsa runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verbs = visible_subcommands();
    assert!(
        verbs.iter().any(|v| v == "run") && verbs.iter().any(|v| v == "reload"),
        "{verbs:?}"
    );
    let main = std::fs::read_to_string(dir.path().join("ironsa.8")).expect("ironsa.8 written");
    assert!(
        main.starts_with(".ie") || main.contains(".TH ironsa 8"),
        "not a man page: {main:.200}"
    );
    for verb in &verbs {
        let page = std::fs::read_to_string(dir.path().join(format!("ironsa-{verb}.8")))
            .unwrap_or_else(|e| panic!("no page for `ironsa {verb}`: {e}"));
        let listed = format!("ironsa\\-{}(8)", verb.replace('-', "\\-"));
        assert!(main.contains(&listed), "ironsa.8 does not list {verb}");
        assert!(page.contains(".SH SYNOPSIS"), "ironsa-{verb}.8 has no synopsis");
    }
    let pages = std::fs::read_dir(dir.path()).expect("folder listed").count();
    assert_eq!(
        pages,
        verbs.len() + 1,
        "one page per visible subcommand plus ironsa.8, none for hidden ones"
    );
}

#[test]
fn completions_name_the_subcommands_but_not_the_hidden_one() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ironsa()
            .args(["generate", "completions", shell])
            .output()
            .expect("ironsa runs");
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).expect("UTF-8 script");
        for verb in visible_subcommands() {
            assert!(script.contains(&verb), "{shell} completion lacks {verb}");
        }
        assert!(
            !script.contains("generate"),
            "{shell} completion offers the hidden generate command"
        );
    }
}

#[test]
fn unwritable_man_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"").expect("file written");
    let out = ironsa()
        .args(["generate", "man"])
        .arg(blocker.join("man"))
        .output()
        .expect("ironsa runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot write man pages to"), "{err}");
}
