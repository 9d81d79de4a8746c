#!/usr/bin/env bash
# The test suite: unit, property, known-answer and integration tests
# (strongSwan interop, network namespaces, TUN, DPDK with virtual devices).
# Integration tests need root (namespaces, TUN devices, charon).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TERM_COLOR=never
# Default build: everything but DPDK.
cargo test --workspace --no-fail-fast -- --test-threads=2
# The DPDK bindings and backend with virtual devices (EAL without hugepages),
# and the daemon's hw-probe built with DPDK.
cargo test -p ironsa-ffi --features dpdk --no-fail-fast
cargo test -p ironsa-fastpath --features dpdk --no-fail-fast
cargo test --features dpdk --test hw_probe --no-fail-fast
