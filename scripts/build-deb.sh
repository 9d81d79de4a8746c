#!/usr/bin/env bash
# Builds the Debian package: the release binary, its man pages and shell
# completions (generated from the CLI by `ironsa generate`), then
# `cargo deb --no-build` ([package.metadata.deb] in Cargo.toml).
# Prints the path of the .deb on its last line. Needs cargo-deb
# (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "error: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 1; }
cargo build --release --bin ironsa >&2
out=target/packaging
rm -rf "$out"
mkdir -p "$out/completions"
./target/release/ironsa generate man "$out/man"
gzip -9n "$out"/man/*.8
./target/release/ironsa generate completions bash >"$out/completions/ironsa.bash"
./target/release/ironsa generate completions zsh >"$out/completions/_ironsa"
./target/release/ironsa generate completions fish >"$out/completions/ironsa.fish"
cargo deb -p ironsa --no-build --strip --output target/debian/ >&2
ls -t target/debian/ironsa_*.deb | head -1
