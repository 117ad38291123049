#!/usr/bin/env bash
# Same-run A/B of two ringlink binaries on HTTP/2: CPU per request (or gRPC call) of the
# proxy process, one monoio shard on CPU 0 (`taskset -c 0`), alternating the binaries for
# ROUNDS rounds of SECONDS each after a 2 s warm-up per process. Load and backend on CPU 1:
#   h2    h2load -t1 -cC -mM (h2c, prior knowledge; C and M from H2_C and H2_M, 10 each
#         by default) to `bench-backend --h2`; its slowest request is printed too
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
h2_c=${H2_C:-10}
h2_m=${H2_M:-10}
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
        h2) taskset -c 1 h2load -t1 -c"$h2_c" -m"$h2_m" -D "$1" "http://$listen/" 2>&1 |
            awk '/^requests:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^succeeded/) n = $i }
                 /^time for request:/ { max = $5 }
                 END { print n, max }' ;;
        grpc) taskset -c 1 "$bin/ringlink-grpc-load" --unary --concurrency 50 --connections 10 \
            --duration "$1" "$listen" 2>&1 | tail -n 1 | grep -o '"count":[0-9]*' | head -1 |
            cut -d: -f2 | sed 's/$/ -/' ;;
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
        read -r done_ slowest <<<"$(load "$seconds")"
        t1=$(cpu_ticks $pid)
        kill $pid
        wait $pid 2>/dev/null || true
        awk -v r="$round" -v p="$proxy" -v n="$done_" -v t=$((t1 - t0)) -v us="$tick_us" \
            -v s="$slowest" 'BEGIN {
                printf "round %s %s: %d done, %.2f us CPU each", r, p, n, t * us / n
                if (s != "-") printf ", slowest %s", s
                printf "\n" }'
    done
done
