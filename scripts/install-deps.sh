#!/usr/bin/env bash
# Installs the system packages ironsa's build, demo and tests need (Debian 12).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

PACKAGES=(
  # strongSwan: the interop peer of the tests (charon, swanctl, pki, kernel-libipsec)
  strongswan-charon strongswan-swanctl strongswan-pki
  libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins
  # DPDK 22.11 and what our bindings are generated with
  libdpdk-dev dpdk-dev pkg-config clang libclang-dev libipsec-mb-dev
  # network tools used by tests and benchmarks
  iproute2 iputils-ping iperf3 tshark procps jq bc
  # offloads off on veths whose frames DPDK's net_af_packet reads (tests/dpdk_gateway.rs)
  ethtool
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
