#!/usr/bin/env bash
# Installs the system packages ironsa's build, demo and tests need (Debian 12),
# and cargo-deb for the package test (not with --no-cargo-deb).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
with_cargo_deb=yes
[ "${1:-}" = --no-cargo-deb ] && with_cargo_deb=no

PACKAGES=(
  # strongSwan: the interop peer of the tests (charon, swanctl, pki, kernel-libipsec)
  strongswan-charon strongswan-swanctl strongswan-pki
  libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins
  # eap-mschapv2 for the road-warrior client of tests/interop/eap.rs
  libcharon-extauth-plugins
  # DPDK 22.11 and what our bindings are generated with
  libdpdk-dev dpdk-dev pkg-config clang libclang-dev libipsec-mb-dev
  # network tools used by tests and benchmarks
  iproute2 iputils-ping iperf3 tshark procps jq bc
  # the NAT router namespace of the NAT-T tests (tests/interop/ikev1.rs,
  # tests/nat_traversal.rs) and its connection tracking
  nftables conntrack
  # an HTTP client for the metrics endpoint test (tests/daemon_ops.rs)
  curl
  # offloads off on veths whose frames DPDK's net_af_packet reads (tests/dpdk_gateway.rs)
  ethtool
  # the Debian package's dependencies ($auto) and its test (setpriv)
  dpkg-dev util-linux
  # the RADIUS server the AAA tests start from a generated configuration
  # (tests/interop/radius_freeradius.rs), and radclient
  freeradius freeradius-utils
  # the distributed store of the cluster tests (tests/cluster.rs), and protoc, which
  # the etcd-client crate's build script compiles its gRPC definitions with
  etcd-server etcd-client protobuf-compiler
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: installing ${missing[*]} needs root, and sudo is not installed: run as root" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "$with_cargo_deb" = yes ] && ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (builds the Debian package; a few minutes)"
  cargo install cargo-deb --locked --quiet
fi

# strongSwan 6 with ML-KEM (the peer of the post-quantum interop tests), built from
# the reference-peer sources when they sit beside the project; without them those
# tests skip and say why.
PEERS="$(cd "$(dirname "$0")/.." && pwd)/../shared/peers"
if [ -x "$PEERS/build-strongswan6.sh" ]; then
  STRONGSWAN6_PREFIX=${IRONSA_STRONGSWAN6:-/opt/strongswan6}
  AS_ROOT=""
  [ "$(id -u)" -ne 0 ] && AS_ROOT="sudo"
  echo "strongSwan 6 into $STRONGSWAN6_PREFIX (a few minutes the first time)"
  $AS_ROOT "$PEERS/build-strongswan6.sh" "$STRONGSWAN6_PREFIX"
fi
