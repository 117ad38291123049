#!/usr/bin/env bash
# A fixed traffic scenario through one ringlink binary, printing its /metrics page with the
# values that vary from run to run (latencies, process figures, byte counts of h2 framing)
# left out, so that two builds can be diffed:
#
#   benches/scripts/metrics-scenario.sh target/release/ringlink > new.txt
#   benches/scripts/metrics-scenario.sh /path/to/old/ringlink  > old.txt
#   diff old.txt new.txt
#
# Needs curl and h2load (nghttp2-client), and bench-backend next to the ringlink binary
# or on PATH. Traffic goes only to loopback; every process it starts is ended by PID.
set -euo pipefail
RINGLINK=${1:?usage: metrics-scenario.sh RINGLINK_BINARY}
BACKEND=$(dirname "$RINGLINK")/bench-backend
[ -x "$BACKEND" ] || BACKEND=$(command -v bench-backend)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
H1=$(free_port); H2=$(free_port); SINK=$(free_port); CLOSED=$(free_port)
OUT=$(free_port); IN=$(free_port); ADMIN=$(free_port)
"$BACKEND" "127.0.0.1:$H1" & pids+=($!)
"$BACKEND" --h2 "127.0.0.1:$H2" & pids+=($!)
"$BACKEND" --sink "127.0.0.1:$SINK" & pids+=($!)

LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS="127.0.0.1:$OUT" \
LINKERD2_PROXY_INBOUND_LISTEN_ADDR="127.0.0.1:$IN" \
LINKERD2_PROXY_ADMIN_LISTEN_ADDR="127.0.0.1:$ADMIN" \
LINKERD2_PROXY_CORES=1 LINKERD2_PROXY_LOG=error RINGLINK_RUNTIME=monoio \
    "$RINGLINK" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN/ready" >/dev/null && break; sleep 0.05; done

# HTTP/1: five requests on one connection, one to a closed port (502), one bad request.
curl -s -x "http://127.0.0.1:$OUT" -o /dev/null "http://127.0.0.1:$H1/a" \
    -o /dev/null "http://127.0.0.1:$H1/b" -o /dev/null "http://127.0.0.1:$H1/c" \
    -o /dev/null "http://127.0.0.1:$H1/d" -o /dev/null "http://127.0.0.1:$H1/e"
curl -s -o /dev/null -x "http://127.0.0.1:$OUT" "http://127.0.0.1:$CLOSED/"
printf 'GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n' | curl -s -o /dev/null --max-time 2 \
    telnet://127.0.0.1:$OUT || true
# HTTP/2: 20 streams over 2 connections, routed by l5d-dst-override.
h2load -n 20 -c 2 -H "l5d-dst-override: 127.0.0.1:$H2" "http://127.0.0.1:$OUT/" >/dev/null
# Opaque TCP addressed to the proxy itself: refused as a loop (not HTTP).
printf 'hello' | curl -s --max-time 1 telnet://127.0.0.1:$OUT >/dev/null || true
sleep 0.5

curl -s "http://127.0.0.1:$ADMIN/metrics" |
    grep -v '^#' |
    grep -Ev '^(process_|proxy_build_info|response_latency_ms_(bucket|sum))' |
    sed -E "s/$H1\b/H1/g; s/$H2\b/H2/g; s/$CLOSED\b/CLOSED/g; s/$OUT\b/OUT/g; s/$SINK\b/SINK/g" |
    sort
