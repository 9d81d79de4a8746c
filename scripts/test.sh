#!/usr/bin/env bash
# The test suite: unit, property, known-answer and integration tests
# (strongSwan interop, network namespaces, DPDK with virtual devices).
# Integration tests need root (namespaces, TUN, charon).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TERM_COLOR=never
# Default build: everything but DPDK.
cargo test --workspace --no-fail-fast -- --test-threads=2
# The DPDK backend with virtual devices (EAL without hugepages).
cargo test -p ironsa-ffi --features dpdk --no-fail-fast
