#!/usr/bin/env bash
# Same-run A/B of two ringlink binaries on HTTP/2: CPU per request (or gRPC call) of the
# proxy process, one monoio shard on CPU 0 (`taskset -c 0`), alternating the binaries for
# ROUNDS rounds of SECONDS each after a 2 s warm-up per process. Load and backend on CPU 1:
#   h2    h2load -t1 -c10 -m10 (h2c, prior knowledge) to `bench-backend --h2`
#   grpc  ringlink-grpc-load --unary --concurrency 50 --connections 10 to `bench-backend --grpc`
# CPU is user + system time from /proc/PID/stat over the measured run, divided by the
# requests (calls) that succeeded.
#
#   cargo build --release -p ringlink-engine -p ringlink-benches
#   cp target/release/ringlink /tmp/ringlink-a   # ...change, rebuild...
#   benches/scripts/h2-ab.sh /tmp/ringlink-a target/release/ringlink [h2|grpc] [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1
b=$2
kind=${3:-h2}
rounds=${4:-3}
seconds=${5:-6}
bin=target/release
tick_us=$((1000000 / $(getconf CLK_TCK)))
backend_port=19680
listen=127.0.0.1:19640
case $kind in
    h2) taskset -c 1 "$bin/bench-backend" --h2 "127.0.0.1:$backend_port" & ;;
    grpc) taskset -c 1 "$bin/bench-backend" --grpc "127.0.0.1:$backend_port" & ;;
    *) echo "kind: h2 or grpc" >&2; exit 64 ;;
esac
backend=$!
trap 'kill $backend 2>/dev/null' EXIT
sleep 0.5
load() {
    case $kind in
        h2) taskset -c 1 h2load -t1 -c10 -m10 -D "$1" "http://$listen/" 2>&1 |
            sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' ;;
        grpc) taskset -c 1 "$bin/ringlink-grpc-load" --unary --concurrency 50 --connections 10 \
            --duration "$1" "$listen" 2>&1 | tail -n 1 | grep -o '"count":[0-9]*' | head -1 |
            cut -d: -f2 ;;
    esac
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq 1 "$rounds"); do
    for proxy in "$a" "$b"; do
        LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=$listen \
        LINKERD2_PROXY_INBOUND_LISTEN_ADDR=127.0.0.1:19643 \
        LINKERD2_PROXY_ADMIN_LISTEN_ADDR=127.0.0.1:19690 \
        LINKERD2_PROXY_CONTROL_LISTEN_ADDR=127.0.0.1:19691 \
        LINKERD2_PROXY_CORES=1 RINGLINK_RUNTIME=${RINGLINK_RUNTIME:-monoio} \
        LINKERD2_PROXY_LOG=warn RINGLINK_ORIG_DST_OVERRIDE="127.0.0.1:$backend_port" \
            taskset -c 0 "$proxy" &
        pid=$!
        sleep 1
        load 2 >/dev/null
        t0=$(cpu_ticks $pid)
        done_=$(load "$seconds")
        t1=$(cpu_ticks $pid)
        kill $pid
        wait $pid 2>/dev/null || true
        awk -v r="$round" -v p="$proxy" -v n="$done_" -v t=$((t1 - t0)) -v us="$tick_us" \
            'BEGIN { printf "round %s %s: %d done, %.2f us CPU each\n", r, p, n, t * us / n }'
    done
done
