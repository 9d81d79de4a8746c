#!/usr/bin/env bash
# Builds the Debian package, installs it, and runs the installed unit's
# ExecStart command line the way systemd would (its capability bounding set
# and no_new_privs, through setpriv, and its RuntimeDirectory) with a
# configuration on loopback; checks that the daemon answers on the default
# control socket, survives ExecReload's SIGHUP and stops on SIGTERM, that
# hw-probe finds the installed hardware profiles and that the installed DPDK
# example names one. Removes the package again unless it was installed
# before. Needs root (dpkg). Last line: "deb package: PASS" or "... FAIL: why".
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deb package: FAIL: $*"; exit 1; }
trap 'echo "deb package: FAIL: line $LINENO: $BASH_COMMAND"' ERR
if [ "$(id -u)" -ne 0 ]; then
  echo "deb package: SKIP (needs root to install a package)"
  exit 0
fi

UNIT=/usr/lib/systemd/system/ironsa.service
RUNTIME=/run/ironsa
SOCKET=$RUNTIME/ironsa.sock
PROFILES=/usr/share/ironsa/hw-profiles
WORK=$(mktemp -d /tmp/ironsa-deb.XXXXXX)
PID=""
made_runtime=no
installed_before=no
dpkg-query -W -f='${Status}' ironsa 2>/dev/null | grep -q "install ok installed" && installed_before=yes
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  if [ "$installed_before" = no ]; then dpkg --purge ironsa >/dev/null 2>&1 || true; fi
  if [ "$made_runtime" = yes ]; then rm -rf "$RUNTIME"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

deb=$(bash scripts/build-deb.sh | tail -1) || fail "scripts/build-deb.sh failed"
[ -f "$deb" ] || fail "scripts/build-deb.sh made no package"
dpkg -i "$deb" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; fail "dpkg -i $deb"; }

# What the package installs.
for f in /usr/sbin/ironsa "$UNIT" /etc/ironsa/ironsa.toml /usr/share/man/man8/ironsa.8.gz \
  /usr/share/man/man8/ironsa-run.8.gz /usr/share/bash-completion/completions/ironsa \
  /usr/share/zsh/vendor-completions/_ironsa /usr/share/fish/vendor_completions.d/ironsa.fish \
  /usr/share/doc/ironsa/examples/site-to-site.toml /usr/share/doc/ironsa/operations.md \
  "$PROFILES/software.toml" "$PROFILES/af-packet.toml"; do
  [ -e "$f" ] || fail "$f not installed"
done
[ "$(stat -c %a /etc/ironsa/ironsa.toml)" = 600 ] || fail "/etc/ironsa/ironsa.toml is not mode 0600"
dpkg-query -W -f='${Conffiles}' ironsa | grep -q " /etc/ironsa/ironsa.toml " ||
  fail "/etc/ironsa/ironsa.toml is not a conffile"
/usr/sbin/ironsa check --config /etc/ironsa/ironsa.toml >/dev/null || fail "the shipped configuration does not pass ironsa check"
bash -c 'source /usr/share/bash-completion/completions/ironsa && complete -p ironsa' >/dev/null 2>&1 ||
  fail "the bash completion does not load"
zcat /usr/share/man/man8/ironsa-run.8.gz | grep -q '^\\fB\\-c\\fR, \\fB\\-\\-config\\fR' || fail "man ironsa-run does not show --config"
# hw-probe's default folder is the installed one, wherever it is run from.
probe=$(cd / && /usr/sbin/ironsa hw-probe 2>&1) || fail "ironsa hw-probe run from /: $probe"
[[ "$probe" == *"profile software in $PROFILES"* ]] || fail "ironsa hw-probe did not read $PROFILES: $probe"
# The installed DPDK example names an installed profile (this build has no
# DPDK, so check stops at the profile's backend, after reading it).
example=/usr/share/doc/ironsa/examples/dpdk-gateway.toml
profile=$(sed -n 's/^hw_profile = "\(.*\)"$/\1/p' "$example")
[ -f "$profile" ] || fail "$example names hw_profile '$profile', which is not installed"
checked=$(/usr/sbin/ironsa check --config "$example" 2>&1 || true)
[[ "$checked" == *"selects the DPDK backend"* ]] || fail "ironsa check $example did not read its profile: $checked"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$UNIT" >"$WORK/verify.log" 2>&1 || { cat "$WORK/verify.log"; fail "systemd-analyze verify $UNIT"; }
fi

# The unit's command line and restrictions, on a configuration of our own.
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT")
grep -q '^NoNewPrivileges=yes' "$UNIT" || fail "the unit does not set NoNewPrivileges=yes"
grep -qx "RuntimeDirectory=${RUNTIME#/run/}" "$UNIT" || fail "the unit does not create $RUNTIME (RuntimeDirectory=)"
grep -q "^control_socket = \"$SOCKET\"" /etc/ironsa/ironsa.toml || fail "/etc/ironsa/ironsa.toml does not use $SOCKET"
[[ "$exec_start" == *"--config /etc/ironsa/ironsa.toml"* ]] || fail "unexpected ExecStart: $exec_start"
bounding=-all
for c in $caps; do
  c=${c#CAP_}
  bounding+=",+${c,,}"
done
port=$((20000 + RANDOM % 20000))
cat >"$WORK/ironsa.toml" <<TOML
[daemon]
listen = ["127.0.0.1"]
ike_port = $port
nat_port = $((port + 1))
shards = 1

[fastpath]
backend = "software"
tun_name = "ironsa-deb$((RANDOM % 1000))"
install_routes = false
TOML
read -r -a argv <<<"${exec_start//\/etc\/ironsa\/ironsa.toml/$WORK/ironsa.toml}"
# As systemd does for RuntimeDirectory=; the configuration leaves the
# control socket at its default, which the CLI uses too.
if [ -e "$SOCKET" ]; then fail "$SOCKET exists: another ironsa runs here"; fi
if [ ! -d "$RUNTIME" ]; then mkdir -m 0755 "$RUNTIME"; made_runtime=yes; fi
setpriv --no-new-privs --bounding-set "$bounding" -- "${argv[@]}" >"$WORK/daemon.log" 2>&1 &
PID=$!
up=no
for _ in $(seq 100); do
  if /usr/sbin/ironsa stats >/dev/null 2>&1; then up=yes; break; fi
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
[ "$up" = yes ] || { cat "$WORK/daemon.log"; fail "the unit's command did not answer on its control socket within 10 s"; }
mask=$((16#$(awk '/^CapBnd/ {print $2}' "/proc/$PID/status")))
kept=0
while [ "$mask" -ne 0 ]; do kept=$((kept + (mask & 1))); mask=$((mask >> 1)); done
[ "$kept" -eq "$(wc -w <<<"$caps")" ] || fail "the daemon runs with $kept capabilities, the unit allows: $caps"
reload=$(sed -n 's/^ExecReload=//p' "$UNIT")
[ "$reload" = '/bin/kill -HUP $MAINPID' ] || fail "unexpected ExecReload: $reload"
kill -HUP "$PID"
for _ in $(seq 50); do grep -q "configuration reloaded" "$WORK/daemon.log" && break; sleep 0.1; done
grep -q "configuration reloaded" "$WORK/daemon.log" || { cat "$WORK/daemon.log"; fail "SIGHUP (ExecReload) did not reload the configuration"; }
/usr/sbin/ironsa stats >/dev/null 2>&1 || { cat "$WORK/daemon.log"; fail "no answer after SIGHUP (ExecReload)"; }
kill -TERM "$PID"
for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && { cat "$WORK/daemon.log"; fail "the daemon did not stop within 10 s of SIGTERM"; }
status=0
wait "$PID" || status=$?
PID=""
[ "$status" -eq 0 ] || { cat "$WORK/daemon.log"; fail "the daemon exited with status $status"; }
echo "deb package: PASS ($(basename "$deb"): installed, ran the unit's ExecStart with capabilities $caps on $SOCKET, reloaded, stopped; hw-probe and the DPDK example found $PROFILES)"
