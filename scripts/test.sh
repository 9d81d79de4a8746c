#!/usr/bin/env bash
# The test suite: unit, property, known-answer and integration tests
# (strongSwan interop, network namespaces, TUN, DPDK with virtual devices).
# Integration tests need root (namespaces, TUN devices, charon): re-runs
# itself through sudo when started by another user. Last: the Debian package
# is built, installed and its unit's command started (scripts/test-deb.sh).
set -euo pipefail
ROOT_REASON="network namespaces, TUN devices, charon, dpkg"
source "$(dirname "$0")/lib/root.sh"
as_root "$0" "$@"
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TERM_COLOR=never
# Tests that need root or a tool skip without it; here nothing may be skipped.
export IRONSA_TESTS_REQUIRE_ALL=1
# Every step runs even when an earlier one fails; the summary names the failed ones.
failed=()
step() {
  echo "== $*"
  "$@" || failed+=("$*")
}
# Default build: everything but DPDK.
step cargo test --workspace --no-fail-fast -- --test-threads=2
# The DPDK bindings and backend with virtual devices (EAL without hugepages),
# the daemon's hw-probe built with DPDK, and a gateway on DPDK af_packet
# ports carrying a tunnel to a software-fastpath peer (root, ~10 s).
step cargo test -p ironsa-ffi --features dpdk --no-fail-fast
step cargo test -p ironsa-fastpath --features dpdk --no-fail-fast
step cargo test --features dpdk --lib --bins --test hw_probe --test dpdk_gateway --no-fail-fast
# The Debian package: built (release), installed, the unit's ExecStart run on
# loopback, answered on its control socket, reloaded, stopped.
step bash scripts/test-deb.sh
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "all test steps passed"
