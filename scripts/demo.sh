#!/usr/bin/env bash
# The ironsa demo, on loopback, in about a minute:
#   1. installs what is needed and builds ironsa and ikegen (release);
#   2. starts a gateway on 127.0.0.1 (examples/loopback-demo.toml: software
#      fastpath on a TUN device, 2 shards, cookies, metrics);
#   3. drives TUNNELS IKEv2 tunnels (x25519 + PSK, AES-256-GCM, one CHILD_SA
#      each, installed in the gateway's fastpath) into it with ikegen from
#      256 source addresses of 127.0.1.0/24;
#   4. pushes ESP traffic through every tunnel for a few seconds;
#   5. prints a report and stops everything.
# Needs root (TUN device, raw ESP socket): re-runs itself through sudo when
# started by another user. TUNNELS=N and ESP_SECS=S override.
set -euo pipefail
ROOT_REASON="the gateway opens a TUN device and a raw ESP socket" KEEP_ENV="TUNNELS ESP_SECS"
source "$(dirname "$0")/lib/root.sh"
as_root "$0" "$@"
cd "$(dirname "$0")/.."
TUNNELS=${TUNNELS:-5000}
ESP_SECS=${ESP_SECS:-5}
command -v cargo >/dev/null || { echo "cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }

bash scripts/install-deps.sh --no-cargo-deb
echo "== building (release)"
cargo build --release --quiet --bin ironsa -p ironsa -p ironsa-bench --bin ikegen

WORK=$(mktemp -d /tmp/ironsa-demo.XXXXXX)
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$GW_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

fetch_metrics() { exec 3<>/dev/tcp/127.0.0.1/9500 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3; exec 3>&-; }
# Sum of a Prometheus metric, optionally filtered by a label substring.
metric() { fetch_metrics 2>/dev/null | grep "^$1" | grep -- "${2:-}" | awk '{s+=$NF} END {printf "%d", s+0}'; }

echo "== starting the gateway (examples/loopback-demo.toml)"
./target/release/ironsa check --config examples/loopback-demo.toml
./target/release/ironsa run --config examples/loopback-demo.toml >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 100); do
  ./target/release/ironsa --socket /tmp/ironsa-demo.sock stats >/dev/null 2>&1 && break
  sleep 0.1
done
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)

echo "== ikegen: $TUNNELS tunnels, then ESP through all of them for ${ESP_SECS}s"
./target/release/ikegen --remote 127.0.0.1:500 --source 127.0.1.0/24 -n "$TUNNELS" -c 2000 \
  --psk 'demo-only-Zq8#kP2!vR9@wX4$yT7&uN1*' --remote-id gw.demo.test --local-id 'user{n}@demo.test' \
  --local-ts '10.128.{n/256%256}.{n%256}/32' --remote-ts 10.0.0.0/8 \
  --hold "$ESP_SECS" --esp-size 1400 --gateway-metrics 127.0.0.1:9500 --json --quiet >"$WORK/ikegen.json"

UP=$(./target/release/ironsa --socket /tmp/ironsa-demo.sock sas --json | grep -c '"state": "ESTABLISHED"' || true)
CHILDREN=$(metric ironsa_child_sas)
RSS1=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)
ESP_IN=$(metric ironsa_esp_packets_total 'direction="in"')
ESP_BYTES=$(metric ironsa_esp_bytes_total 'direction="in"')
COOKIES=$(metric ironsa_cookies_sent_total)
QUEUE_DROPS=$(metric ironsa_receive_queue_drops_total)

python3 - "$WORK/ikegen.json" "$UP" "$CHILDREN" "$RSS0" "$RSS1" "$ESP_IN" "$ESP_BYTES" "$ESP_SECS" "$COOKIES" "$QUEUE_DROPS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
up, children, rss0, rss1, esp_in, esp_bytes, secs, cookies, queue_drops = (int(x) for x in sys.argv[2:11])
lat = r["latency_ike_ms"]
e = r.get("esp") or {}
per = (rss1 - rss0) * 1024 / max(up, 1)
print()
print("ironsa demo report")
print("------------------")
print(f"tunnels requested       {r['tunnels']}")
print(f"IKE SAs established     {r['established']} (gateway lists {up} ESTABLISHED, {children} CHILD_SAs)")
print(f"failed                  {r['failed']} {r['failures'] if r['failed'] else ''}")
print(f"handshakes/s            {r['handshakes_per_sec']:.0f}  (generator CPU {r['cpu']['percent_of_wall']:.0f}% of wall)" if 'percent_of_wall' in r.get('cpu', {}) else f"handshakes/s            {r['handshakes_per_sec']:.0f}")
print(f"latency ms              p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  p99.9 {lat['p999']:.1f}  max {lat['max']:.1f}")
print(f"ESP sent by ikegen      {e.get('packets', 0)} packets, {e.get('mbps', 0):.0f} Mbit/s through {e.get('tunnels', 0)} tunnels")
print(f"ESP decrypted by gateway {esp_in} packets, {esp_bytes * 8 / max(secs, 1) / 1e6:.0f} Mbit/s over {secs} s")
if "delivered" in e:
    sent = max(e.get("packets", 0), 1)
    drops = ", ".join(f"{k} {v}" for k, v in sorted(e.get("gateway_drops", {}).items())) or "none"
    print(f"ESP of this run         delivered {e['delivered']} ({100 * e['delivered'] / sent:.1f}%), lost {e['lost']} ({100 * e['lost'] / sent:.1f}%); gateway drops: {drops}")
print(f"gateway memory          {rss1 // 1024} MiB RSS, {per / 1024:.1f} KiB per tunnel incl. fixed buffers (marginal cost: tests/gateway_load.rs)")
print(f"cookies sent            {cookies}")
print(f"socket queue overflows  {queue_drops} packets dropped by the kernel before the gateway read them")
PY
echo
echo "logs and raw reports: $WORK"
