#!/usr/bin/env bash
# Small request/response exchanges relayed as opaque TCP: CPU per request of a ringlink
# process (one monoio shard, `taskset -c 0`) with opaque TCP spliced (RINGLINK_L4_SPLICE=on)
# and copied (off), alternating, ROUNDS rounds of SECONDS each. The load is `h2load --h1
# -c50` (HTTP/1.1) to an inbound port whose protocol detection is disabled, so the proxy
# relays the bytes without parsing them; backend `bench-backend` on CPU 1, load on CPU 1.
#
#   cargo build --release -p ringlink-engine -p ringlink-benches
#   benches/scripts/opaque-rr.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
seconds=${2:-8}
bin=target/release
tick_us=$((1000000 / $(getconf CLK_TCK)))
backend_port=19080
taskset -c 1 "$bin/bench-backend" "127.0.0.1:$backend_port" &
backend=$!
trap 'kill $backend 2>/dev/null' EXIT
sleep 0.5
for round in $(seq 1 "$rounds"); do
    for splice in on off; do
        LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=127.0.0.1:19140 \
        LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:19143 \
        LINKERD2_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:19190 \
        LINKERD2_PROXY_CONTROL_LISTEN_ADDR=127.0.0.1:19191 \
        LINKERD2_PROXY_CORES=1 RINGLINK_RUNTIME=monoio LINKERD2_PROXY_LOG=warn \
        RINGLINK_ORIG_DST_OVERRIDE="127.0.0.1:$backend_port" \
        LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION="$backend_port" \
        RINGLINK_L4_SPLICE=$splice \
            taskset -c 0 "$bin/ringlink" &
        proxy=$!
        sleep 1
        before=$(awk '{print $14 + $15}' "/proc/$proxy/stat")
        done_requests=$(taskset -c 1 h2load --h1 -c50 -t1 -D "$seconds" http://127.0.0.1:19143/ 2>&1 |
            sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
        after=$(awk '{print $14 + $15}' "/proc/$proxy/stat")
        kill "$proxy"
        wait "$proxy" 2>/dev/null || true
        echo "round $round splice=$splice requests=$done_requests" \
            "cpu_us_per_request=$(echo "scale=2; ($after - $before) * $tick_us / $done_requests" | bc)"
    done
done
