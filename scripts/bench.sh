#!/usr/bin/env bash
# Data-plane benchmark: the gateway against the mock upstream directly and against nginx as a plain
# reverse proxy, with wrk, and a streamed-chunk forwarding probe. Writes BENCHMARKS.md (keeping the
# hand-written part below its marker line).
#
#   scripts/bench.sh            # ~5 minutes on 2 cores when the machine is otherwise idle (+ build)
#
# Layout (needs >= 2 cores): nginx and the gateway are pinned to core 0 (one worker / one tokio
# worker thread); the mock upstream, wrk and the probe are pinned to core 1. The "(1 core)" runs
# move nginx and the gateway onto core 1 as well. Everything listens on 127.0.0.1 only.
#
# Knobs (environment): BENCH_DURATION (s per run, default 10), BENCH_WARMUP (s, default 2),
# BENCH_PROBE_STREAMS (default 50), BENCH_CHUNK_INTERVAL_MS (default 5), BENCH_OUT (default
# BENCHMARKS.md), BENCH_KEEP_TMP=1 (keep the temp dir with raw wrk outputs and logs),
# BENCH_WAIT_QUIET (s to wait for idle cores before starting, default 120), BENCH_MAX_OTHER_PCT /
# BENCH_ATTEMPTS / BENCH_RETRY_BUDGET (retry runs disturbed by other processes; see run_case).
#
# Needs: cargo, wrk, nginx, taskset, curl, python3 (stdlib only).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
PROBE_STREAMS=${BENCH_PROBE_STREAMS:-50}
CHUNK_MS=${BENCH_CHUNK_INTERVAL_MS:-5}
OUT=${BENCH_OUT:-BENCHMARKS.md}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PROXY_CORE=0
LOAD_CORE=1

die() { echo "bench: FAILED: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

for tool in cargo wrk taskset curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[ -x "$NGINX" ] || die "nginx not found (set NGINX=/path/to/nginx)"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core $PROXY_CORE, load on core $LOAD_CORE)"

log "building (release)"
cargo build --release --quiet
BIN=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/llm-gateway

TMP=$(mktemp -d "${TMPDIR:-/tmp}/llm-gateway-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${BENCH_KEEP_TMP:-}" ]; then log "raw outputs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop PID: ends one process this script started and waits for it.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_ready NAME PID LOGFILE CURL-ARGS...: polls until the request answers 200.
wait_ready() {
    local name=$1 pid=$2 logfile=$3 code
    shift 3
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "$name exited during startup"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
    done
    cat "$logfile" >&2
    die "$name did not become ready (last status $code)"
}

BODY='{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
BODY_STREAM='{"model":"bench","messages":[{"role":"user","content":"hello"}],"stream":true}'

# wrk scripts: POST the body; `done` prints exact numbers (latency in microseconds).
for variant in plain stream; do
    body=$BODY
    [ "$variant" = stream ] && body=$BODY_STREAM
    cat >"$TMP/post_$variant.lua" <<EOF
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
done

# ---------------------------------------------------------------------------------------------
# Processes
MOCK_PORT=$(free_port)
PROBE_MOCK_PORT=$(free_port)
NGINX_PORT=$(free_port)
NGINX_PROBE_PORT=$(free_port)
GW_PORT=$(free_port)

start_mock() { # PORT EXTRA-ARGS... -> sets STARTED_PID
    local port=$1
    shift
    RUST_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c "$LOAD_CORE" \
        "$BIN" mock-upstream --listen "127.0.0.1:$port" --split 0 "$@" >"$TMP/mock_$port.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    wait_ready "mock upstream :$port" "$STARTED_PID" "$TMP/mock_$port.log" \
        -X POST -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$port/v1/chat/completions"
}

log "starting the mock upstreams"
start_mock "$MOCK_PORT"
MOCK_PID=$STARTED_PID
start_mock "$PROBE_MOCK_PORT" --chunk-interval-ms "$CHUNK_MS"

log "starting nginx"
mkdir -p "$TMP/nginx"
NGINX_USER=""
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"
nginx_server() { # LISTEN-PORT UPSTREAM-NAME
    cat <<EOF
    server {
        listen 127.0.0.1:$1;
        keepalive_requests 100000000;
        location / {
            proxy_pass http://$2;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
EOF
}
cat >"$TMP/nginx/nginx.conf" <<EOF
$NGINX_USER
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; keepalive_requests 100000000; }
    upstream probe_mock { server 127.0.0.1:$PROBE_MOCK_PORT; keepalive 64; keepalive_requests 100000000; }
$(nginx_server "$NGINX_PORT" mock)
$(nginx_server "$NGINX_PROBE_PORT" probe_mock)
}
EOF
taskset -c "$PROXY_CORE" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
    >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_ready nginx "$NGINX_PID" "$TMP/nginx/error.log" \
    -X POST -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
NGINX_WORKER=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null | awk '{print $1}' || true)
[ -n "$NGINX_WORKER" ] || NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -n1 || true)
[ -n "$NGINX_WORKER" ] || die "cannot find the nginx worker process"

gateway_config() { # FILE GATEWAY-PORT UPSTREAM-PORT
    cat >"$1" <<EOF
server:
  listen: "127.0.0.1:$2"
providers:
  upstream: { kind: openai_compatible, base_url: "http://127.0.0.1:$3/v1" }
models:
  bench:
    deployments: [ { provider: upstream, model: bench-upstream } ]
EOF
    "$BIN" check "$1" >/dev/null || die "generated gateway config $1 is invalid"
}

start_gateway() { # CONFIG LOGFILE RUST_LOG -> sets STARTED_PID
    RUST_LOG=$3 TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" "$BIN" serve --config "$1" >"$2" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

status_kb() { # PID FIELD -> kB
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"
}

# ---------------------------------------------------------------------------------------------
# CPU accounting: per-core busy ticks from /proc/stat, per-process ticks from /proc/PID/stat.
CLK_TCK=$(getconf CLK_TCK)
core_ticks() { # CORE -> "busy total"
    awk -v c="cpu$1" '$1 == c {busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 + $9, $2 + $3 + $4}' /proc/stat
}
proc_ticks() { # PID -> utime+stime of all threads
    sed -E 's/^[0-9]+ \(.*\) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

RESULTS=$TMP/results.tsv
printf 'target\tconc\tstream\trps\tp50_us\tp90_us\tp99_us\tmax_us\tcore0_pct\tcore1_pct\tproxy_cpu_pct\tother_pct\n' >"$RESULTS"

check_wrk_output() { # FILE
    if grep -qE 'Non-2xx|Socket errors' "$1"; then
        cat "$1" >&2
        die "wrk saw errors or non-2xx responses ($1)"
    fi
    local line
    line=$(grep '^BENCH_RESULT' "$1") || { cat "$1" >&2; die "no result line in $1"; }
    for field in errors_connect errors_read errors_write errors_status errors_timeout; do
        [[ $line =~ $field=0( |$) ]] || { cat "$1" >&2; die "wrk reported $field != 0 ($1)"; }
    done
    [[ $line =~ requests=0( |$) ]] && { cat "$1" >&2; die "zero requests ($1)"; }
    return 0
}

# CPU ticks (utime + stime) of every process that is not this script or one of its descendants, by
# pid and start time. Processes that start and end between two scans are missed, so this is a lower
# bound (reaped children's time is left out on purpose: it lands on the parent all at once).
cat >"$TMP/others.py" <<'EOF'
import json, os, sys
me, out = int(sys.argv[1]), sys.argv[2]
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            raw = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = raw[raw.rindex(")") + 2:].split()
        procs[int(d)] = (int(f[1]), int(f[11]) + int(f[12]), f[19])
def ours(pid):
    for _ in range(64):
        if pid == me:
            return True
        if pid <= 1 or pid not in procs:
            return False
        pid = procs[pid][0]
    return False
json.dump({f"{pid}:{start}": ticks for pid, (_, ticks, start) in procs.items() if not ours(pid)}, open(out, "w"))
EOF
BENCH_PID=$$

# wait_quiet MAX-SECONDS: waits until both cores were under 15 % busy for a second (this script's
# processes are idle between runs); sets BUSY to the last reading. Fails if time runs out.
wait_quiet() {
    local deadline=$((SECONDS + $1)) b0 b1 a0 a1 quiet said=""
    while :; do
        b0=$(core_ticks 0); b1=$(core_ticks 1); sleep 1; a0=$(core_ticks 0); a1=$(core_ticks 1)
        BUSY=$(echo "$b0 $a0 $b1 $a1" | awk '{printf "%.0f%% / %.0f%%", 100*($4-$1)/($5-$2+1e-9), 100*($10-$7)/($11-$8+1e-9)}')
        quiet=$(echo "$b0 $a0 $b1 $a1" | awk '{print (100*($4-$1)/($5-$2+1e-9) < 15 && 100*($10-$7)/($11-$8+1e-9) < 15) ? "yes" : "no"}')
        [ "$quiet" = yes ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        [ -z "$said" ] && log "cores 0 / 1 busy with other work ($BUSY); waiting for them to go quiet"
        said=1
        sleep 2
    done
}

# run_case TARGET URL CONC STREAM PROXY-PID(or -)
# Runs wrk (warm-up, then measured). If processes outside the benchmark used more than
# BENCH_MAX_OTHER_PCT (default 10) % of a core during the measured run, waits and retries, up to
# BENCH_ATTEMPTS (default 3) times after waiting for the cores to go quiet, keeping the least
# disturbed attempt; retries (and the waits) stop once BENCH_RETRY_BUDGET seconds (default 75)
# beyond the normal run time are used up.
run_case() {
    local target=$1 url=$2 conc=$3 stream=$4 proxy_pid=$5 lua name attempt best_row="" best_other=""
    lua=$TMP/post_plain.lua
    [ "$stream" = yes ] && lua=$TMP/post_stream.lua
    name="$(echo "$target" | tr -c 'a-z0-9+\n' '_')-c$conc-$([ "$stream" = yes ] && echo stream || echo plain)"
    for attempt in $(seq 1 "${BENCH_ATTEMPTS:-3}"); do
        log "wrk $name$([ "$attempt" -gt 1 ] && echo " (attempt $attempt)")"
        taskset -c "$LOAD_CORE" wrk -t1 -c"$conc" -d"${WARMUP}s" -s "$lua" "$url" >"$TMP/warmup-$name.txt" 2>&1 \
            || { cat "$TMP/warmup-$name.txt" >&2; die "wrk failed"; }
        check_wrk_output "$TMP/warmup-$name.txt"
        local c0a c1a c0b c1b pa=0 pb=0 row other
        c0a=$(core_ticks "$PROXY_CORE")
        c1a=$(core_ticks "$LOAD_CORE")
        [ "$proxy_pid" != - ] && pa=$(proc_ticks "$proxy_pid")
        python3 "$TMP/others.py" "$BENCH_PID" "$TMP/others_a.json"
        taskset -c "$LOAD_CORE" wrk -t1 -c"$conc" -d"${DURATION}s" --latency -s "$lua" "$url" \
            >"$TMP/wrk-$name.$attempt.txt" 2>&1 || { cat "$TMP/wrk-$name.$attempt.txt" >&2; die "wrk failed"; }
        python3 "$TMP/others.py" "$BENCH_PID" "$TMP/others_b.json"
        c0b=$(core_ticks "$PROXY_CORE")
        c1b=$(core_ticks "$LOAD_CORE")
        [ "$proxy_pid" != - ] && pb=$(proc_ticks "$proxy_pid")
        check_wrk_output "$TMP/wrk-$name.$attempt.txt"
        row=$(python3 - "$(grep '^BENCH_RESULT' "$TMP/wrk-$name.$attempt.txt")" "$target" "$conc" "$stream" \
            "$c0a" "$c0b" "$c1a" "$c1b" "$pa" "$pb" "$proxy_pid" "$CLK_TCK" "$TMP/others_a.json" "$TMP/others_b.json" <<'EOF'
import json, sys
line, target, conc, stream, c0a, c0b, c1a, c1b, pa, pb, pid, tck, sa, sb = sys.argv[1:]
kv = dict(p.split("=") for p in line.split()[1:])
secs = int(kv["duration_us"]) / 1e6
tck = int(tck)
def delta(a, b):
    (ba, ta, pa_), (bb, tb, pb_) = map(int, a.split()), map(int, b.split())
    return bb - ba, tb - ta, pb_ - pa_
(b0, t0, u0), (b1, t1, u1) = delta(c0a, c0b), delta(c1a, c1b)
before, after = json.load(open(sa)), json.load(open(sb))
# CPU used by everything outside the benchmark during the run (either core), in % of one core: the
# summed ticks of other processes seen in /proc, or, when none of the benchmark's processes ran on
# the proxy core (direct and single-core runs), that core's busy time if larger; it also catches
# processes too short-lived for the scan. (Subtracting the benchmark's own ticks from the cores'
# busy time is no good: tick sampling misattributes same-core ping-pong by 10-35 %.)
scanned = 100.0 * sum(max(0, t - before.get(k, 0)) for k, t in after.items()) / tck / secs
idle_core = pid == "-" or target.endswith("(1 core)")
other = max(0.0, scanned, 100.0 * u0 / max(1, t0) if idle_core else 0.0)
proxy = "" if pid == "-" else f"{100.0 * (int(pb) - int(pa)) / tck / secs:.0f}"
print("\t".join([target, conc, stream, f"{int(kv['requests']) / secs:.0f}", kv["p50_us"], kv["p90_us"],
                 kv["p99_us"], kv["max_us"], f"{100.0 * b0 / max(1, t0):.0f}", f"{100.0 * b1 / max(1, t1):.0f}",
                 proxy, f"{other:.0f}"]))
EOF
        )
        other=${row##*$'\t'}
        echo "$row" >&2
        if [ -z "$best_row" ] || [ "$other" -lt "$best_other" ]; then
            best_row=$row
            best_other=$other
            cp "$TMP/wrk-$name.$attempt.txt" "$TMP/wrk-$name.txt"
        fi
        [ "$other" -le "${BENCH_MAX_OTHER_PCT:-10}" ] && break
        local budget=$((${BENCH_RETRY_BUDGET:-75} - RETRY_SPENT)) t0=$SECONDS
        if [ "$budget" -le $((WARMUP + DURATION)) ] || [ "$attempt" -ge "${BENCH_ATTEMPTS:-3}" ]; then
            log "WARNING: other processes used $other% of a core during $name; keeping the least disturbed attempt"
            break
        fi
        log "other processes used $other% of a core during $name; retrying"
        wait_quiet $((budget - WARMUP - DURATION)) || true
        RETRY_SPENT=$((RETRY_SPENT + SECONDS - t0 + WARMUP + DURATION + 1))
    done
    printf '%s\n' "$best_row" >>"$RESULTS"
}

run_matrix() { # TARGET URL PROXY-PID
    local conc stream
    for stream in no yes; do
        for conc in 1 64; do
            run_case "$1" "$2" "$conc" "$stream" "$3"
        done
    done
}

# Other work on the machine skews everything: wait (up to BENCH_WAIT_QUIET seconds, default 120)
# for both cores to be nearly idle, and record how busy they were.
wait_quiet "${BENCH_WAIT_QUIET:-120}" || log "WARNING: the cores are busy with other work ($BUSY); the numbers will be noisy"
BUSY_BEFORE=$BUSY
# What a wake-up across cores costs here, versus on one core: a one-byte ping-pong between two
# processes over a socketpair (Python, so a few µs of the round trip are the interpreter).
cat >"$TMP/pingpong.py" <<'EOF'
import os, socket, sys, time
def run(core_a, core_b, n=20000):
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        os.sched_setaffinity(0, {core_b})
        for _ in range(n):
            b.recv(1)
            b.send(b"x")
        os._exit(0)
    os.sched_setaffinity(0, {core_a})
    t = []
    for _ in range(n):
        s = time.perf_counter_ns()
        a.send(b"x")
        a.recv(1)
        t.append(time.perf_counter_ns() - s)
    os.waitpid(pid, 0)
    t.sort()
    return f"p50 {t[n // 2] / 1000:.0f} µs, p99 {t[n * 99 // 100] / 1000:.0f} µs"
p, l = int(sys.argv[1]), int(sys.argv[2])
print(f"same core {run(l, l)}; across cores {run(p, l)}")
EOF
PINGPONG=$(python3 "$TMP/pingpong.py" "$PROXY_CORE" "$LOAD_CORE")
log "socketpair round trip: $PINGPONG"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
RETRY_SPENT=0 # seconds spent on retries so far
log "cores 0 / 1 busy before the runs: $BUSY_BEFORE (load average $LOADAVG_START)"
CHAT=/v1/chat/completions

# ---------------------------------------------------------------------------------------------
# 1. The mock directly and through nginx.
run_matrix direct "http://127.0.0.1:$MOCK_PORT$CHAT" -
run_matrix nginx "http://127.0.0.1:$NGINX_PORT$CHAT" "$NGINX_WORKER"

# 2. The gateway with RUST_LOG=warn (no per-request log line): RSS idle, then under load.
gateway_config "$TMP/gateway.yaml" "$GW_PORT" "$MOCK_PORT"
log "starting the gateway"
start_gateway "$TMP/gateway.yaml" "$TMP/gateway.log" warn
GW_PID=$STARTED_PID
wait_ready gateway "$GW_PID" "$TMP/gateway.log" "http://127.0.0.1:$GW_PORT/healthz"
sleep 1
RSS_IDLE=$(status_kb "$GW_PID" VmRSS)
curl -sf -o /dev/null -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$GW_PORT$CHAT" \
    || die "gateway did not answer a chat request"
RSS_ONE=$(status_kb "$GW_PID" VmRSS)
GW_THREADS=$(status_kb "$GW_PID" Threads)
run_matrix gateway "http://127.0.0.1:$GW_PORT$CHAT" "$GW_PID"
RSS_AFTER=$(status_kb "$GW_PID" VmRSS)
RSS_HWM=$(status_kb "$GW_PID" VmHWM)

# 2b. Concurrency 1 with every process on the load core. Across cores each hop waits for the other
# core to wake up (tens of µs on a VM), which the direct path never pays; on one core the latency
# difference is the proxy's own work plus two context switches.
log "re-pinning nginx and the gateway to core $LOAD_CORE for the single-core runs"
taskset -a -p -c "$LOAD_CORE" "$NGINX_WORKER" >/dev/null
taskset -a -p -c "$LOAD_CORE" "$GW_PID" >/dev/null
for stream in no yes; do
    run_case "nginx (1 core)" "http://127.0.0.1:$NGINX_PORT$CHAT" 1 "$stream" "$NGINX_WORKER"
    run_case "gateway (1 core)" "http://127.0.0.1:$GW_PORT$CHAT" 1 "$stream" "$GW_PID"
done
taskset -a -p -c "$PROXY_CORE" "$NGINX_WORKER" >/dev/null
stop "$GW_PID"

# 3. The same with the default `info` request log (one JSON line per request) written to a file.
log "starting the gateway with the info request log"
start_gateway "$TMP/gateway.yaml" "$TMP/gateway-info.log" info
GWI_PID=$STARTED_PID
wait_ready gateway "$GWI_PID" "$TMP/gateway-info.log" "http://127.0.0.1:$GW_PORT/healthz"
run_matrix gateway+log "http://127.0.0.1:$GW_PORT$CHAT" "$GWI_PID"
RSS_INFO_HWM=$(status_kb "$GWI_PID" VmHWM)
stop "$GWI_PID"
INFO_LOG_LINES=$(wc -l <"$TMP/gateway-info.log")
INFO_LOG_BYTES=$(wc -c <"$TMP/gateway-info.log")

# 4. Streamed-chunk forwarding: the stamping mock, directly / through nginx / through the gateway.
gateway_config "$TMP/gateway-probe.yaml" "$GW_PORT" "$PROBE_MOCK_PORT"
log "starting the gateway for the stream probe"
start_gateway "$TMP/gateway-probe.yaml" "$TMP/gateway-probe.log" warn
GWP_PID=$STARTED_PID
wait_ready gateway "$GWP_PID" "$TMP/gateway-probe.log" "http://127.0.0.1:$GW_PORT/healthz"
log "stream probe: $PROBE_STREAMS streams per target, ${CHUNK_MS} ms between chunks"
taskset -c "$LOAD_CORE" python3 scripts/stream_probe.py --streams "$PROBE_STREAMS" --out "$TMP/probe.json" \
    "direct=127.0.0.1:$PROBE_MOCK_PORT" "nginx=127.0.0.1:$NGINX_PROBE_PORT" "gateway=127.0.0.1:$GW_PORT" \
    >"$TMP/probe.txt" || { cat "$TMP/probe.txt" >&2; die "stream probe failed"; }
cat "$TMP/probe.txt" >&2
log "stream probe again with nginx and the gateway on core $LOAD_CORE"
taskset -a -p -c "$LOAD_CORE" "$NGINX_WORKER" >/dev/null
taskset -a -p -c "$LOAD_CORE" "$GWP_PID" >/dev/null
taskset -c "$LOAD_CORE" python3 scripts/stream_probe.py --streams "$PROBE_STREAMS" --out "$TMP/probe-1core.json" \
    "direct=127.0.0.1:$PROBE_MOCK_PORT" "nginx=127.0.0.1:$NGINX_PROBE_PORT" "gateway=127.0.0.1:$GW_PORT" \
    >"$TMP/probe-1core.txt" || { cat "$TMP/probe-1core.txt" >&2; die "stream probe failed"; }
cat "$TMP/probe-1core.txt" >&2
taskset -a -p -c "$PROXY_CORE" "$NGINX_WORKER" >/dev/null
stop "$GWP_PID"

LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------------
# Report
export TMP RESULTS OUT DURATION WARMUP PROBE_STREAMS CHUNK_MS RSS_IDLE RSS_ONE RSS_AFTER RSS_HWM RSS_INFO_HWM \
    INFO_LOG_LINES INFO_LOG_BYTES GW_THREADS LOADAVG_START LOADAVG_END NGINX BUSY_BEFORE PINGPONG
python3 - <<'EOF'
import csv, datetime, os, platform, subprocess

env = os.environ

def sh(*cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return "?"
    return (done.stdout.strip() or done.stderr.strip() or "?").splitlines()[0]

rows = list(csv.DictReader(open(env["RESULTS"]), delimiter="\t"))

def row(target, conc, stream):
    for r in rows:
        if r["target"] == target and r["conc"] == str(conc) and r["stream"] == stream:
            return r
    raise SystemExit(f"missing result {target} c{conc} {stream}")

def read_probe(name):
    out = {}
    for line in open(os.path.join(env["TMP"], name)):
        if line.startswith("PROBE "):
            parts = line.split()
            out[parts[1]] = {k: float(v) for k, v in (p.split("=") for p in parts[2:])}
    return out

probes = {"proxy on core 0": read_probe("probe.txt"), "all on core 1": read_probe("probe-1core.txt")}
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
mb = lambda kb: float(kb) / 1024.0
commit = sh("git", "rev-parse", "--short", "HEAD")
dirty = " + uncommitted changes" if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                  capture_output=True, text=True).stdout.strip() else ""
ok = lambda good: "✅ meets" if good else "❌ misses"

out = []
w = out.append
w("# Benchmarks\n")
w("Generated by `scripts/bench.sh`, which rewrites everything above the hand-written analysis at the end "
  "(the analysis is kept across runs, so check that it still matches the numbers).\n")
w("## Machine\n")
w("| | |\n|---|---|")
w(f"| Date (UTC) | {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')} |")
w(f"| Commit | `{commit}`{dirty} |")
w(f"| CPU | {cpu_model}, `nproc` = {os.cpu_count()} |")
w(f"| Memory | {mem_kb / 1024 / 1024:.1f} GiB |")
w(f"| Kernel | {platform.release()} |")
w(f"| rustc | {sh('rustc', '--version')} |")
w(f"| nginx / wrk | {sh(env['NGINX'], '-v').replace('nginx version: ', '')} / {sh('wrk', '-v').split(' Copyright')[0]} |")
w(f"| Load average at start / end | {env['LOADAVG_START']} / {env['LOADAVG_END']} |")
w(f"| Wake-up cost: 1-byte ping-pong round trip between two processes | {env['PINGPONG']} |")
w(f"| Cores 0 / 1 busy in the second before the runs | {env['BUSY_BEFORE']} (other work on the machine skews the numbers) |")
w("")
w("## How to reproduce\n")
w("```sh\nscripts/bench.sh   # builds --release, runs everything on 127.0.0.1, rewrites this file\n```\n")
w("Layout: the mock upstream (`llm-gateway mock-upstream --split 0`, 1 tokio worker), `wrk` and the stream probe "
  "run on core 1; nginx (1 worker, `access_log off`, upstream `keepalive 64`, `proxy_http_version 1.1`, "
  "`proxy_buffering off`) and the gateway (`TOKIO_WORKER_THREADS=1`) run on core 0. The `(1 core)` rows re-pin "
  "nginx / the gateway to core 1 next to the mock and wrk. Gateway config: one `openai_compatible` provider "
  "pointing at the mock, model `bench` with one deployment, no client keys, `RUST_LOG=warn`, except the "
  "`gateway+log` rows: default `info` level, one JSON request line per request, written to a file. "
  f"wrk `-t1`, `-c1` or `-c64`, {env['WARMUP']} s warm-up then {env['DURATION']} s measured; body "
  "`{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}`, plus `\"stream\":true` in "
  "the streaming rows (9 SSE events + `[DONE]` per response; through the gateway the mock also sends a usage "
  "event, since the gateway always asks for usage and drops it again). Latencies are wrk's, for the whole "
  "response.\n")

w("## Results\n")
w("`core0` / `core1` = busy % of each core during the measured run (all processes); `proxy CPU` = CPU time of "
  "the nginx worker or the gateway process as % of one core; `other` = CPU used by processes outside the "
  "benchmark (other users' builds, kernel threads; a /proc scan, or the proxy core's busy time when the benchmark left that core idle), % of one core. A run with `other` above "
  "10 % is retried up to twice and the least disturbed attempt is kept.\n")
disturbed = [r for r in rows if float(r["other_pct"]) > 10]
if disturbed:
    w(f"**Warning:** {len(disturbed)} of {len(rows)} runs were disturbed by other processes (`other` > 10 %: "
      + ", ".join(f"{r['target']} c={r['conc']} stream={r['stream']}" for r in disturbed)
      + "); treat their numbers as unreliable and re-run on an idle machine.\n")
w("| target | conc | stream | req/s | p50 µs | p90 µs | p99 µs | max µs | core0 % | core1 % | proxy CPU % | other % |")
w("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    w(f"| {r['target']} | {r['conc']} | {r['stream']} | {int(r['rps']):,} | {r['p50_us']} | {r['p90_us']} | "
      f"{r['p99_us']} | {r['max_us']} | {r['core0_pct']} | {r['core1_pct']} | {r['proxy_cpu_pct'] or '—'} | "
      f"{r['other_pct']} |")
w("")
w("CPU per request at c=64 (proxy CPU time ÷ requests):\n")
w("| | non-streaming | streaming |")
w("|---|---:|---:|")
for target in ("nginx", "gateway", "gateway+log"):
    cells = []
    for stream in ("no", "yes"):
        r = row(target, 64, stream)
        cells.append(f"{float(r['proxy_cpu_pct']) / 100 / float(r['rps']) * 1e6:.1f} µs")
    w(f"| {target} | {cells[0]} | {cells[1]} |")
w("")
w(f"Gateway memory (`/proc/PID/status`): VmRSS {mb(env['RSS_IDLE']):.1f} MB idle after start, "
  f"{mb(env['RSS_ONE']):.1f} MB after the first request, {mb(env['RSS_AFTER']):.1f} MB after the load; VmHWM "
  f"(peak) {mb(env['RSS_HWM']):.1f} MB (`warn` instance), {mb(env['RSS_INFO_HWM']):.1f} MB (`info` instance). "
  f"{env['GW_THREADS']} threads. The `info` instance wrote {int(env['INFO_LOG_LINES']):,} log lines "
  f"({mb(int(env['INFO_LOG_BYTES']) / 1024):.1f} MB).\n")

w("### Streamed-chunk forwarding\n")
w(f"`scripts/stream_probe.py`: {env['PROBE_STREAMS']} streams per path (round robin), the mock "
  f"(`--chunk-interval-ms {env['CHUNK_MS']}`) pausing before each event and stamping it with its send time "
  "right before the write; delay = probe receive time − mock send time, per chunk (same host clock). The probe "
  "is Python, so the direct row is the floor (the probe's own wake-up and read). `first` = each stream's first "
  "chunk; through the gateway it also carries the response headers, which wait for it.\n")
w("| layout | path | chunks | p50 µs | p90 µs | p99 µs | max µs | first p50 µs | first p99 µs |")
w("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for layout, probe in probes.items():
    for name, p in probe.items():
        w(f"| {layout} | {name} | {int(p['chunks'])} | {p['p50_us']:.0f} | {p['p90_us']:.0f} | {p['p99_us']:.0f} | "
          f"{p['max_us']:.0f} | {p['first_p50_us']:.0f} | {p['first_p99_us']:.0f} |")
w("")

w("## Against the targets\n")
w("Added latency = proxy percentile − direct percentile at c=1 (percentiles do not subtract exactly; p99 "
  "differences are rough). `vs nginx` = the same for nginx in the same layout, for scale.\n")
w("| target | layout | gateway | nginx | verdict |")
w("|---|---|---:|---:|---|")
for stream in ("no", "yes"):
    kind = "streaming" if stream == "yes" else "non-streaming"
    d = row("direct", 1, stream)
    for layout, gname, nname in (("proxy on core 0", "gateway", "nginx"),
                                 ("all on core 1", "gateway (1 core)", "nginx (1 core)")):
        g, n = row(gname, 1, stream), row(nname, 1, stream)
        for pct, limit in (("p50", 50), ("p99", 100)):
            key = f"{pct}_us"
            ga, na = int(g[key]) - int(d[key]), int(n[key]) - int(d[key])
            w(f"| added {pct} ≤ {limit} µs, {kind} | {layout} | {ga} µs | {na} µs | {ok(ga <= limit)} |")
for stream in ("no", "yes"):
    kind = "streaming" if stream == "yes" else "non-streaming"
    n, g = row("nginx", 64, stream), row("gateway", 64, stream)
    ratio = int(g["rps"]) / max(1, int(n["rps"]))
    eff = (int(g["rps"]) / max(1.0, float(g["proxy_cpu_pct"]))) / (int(n["rps"]) / max(1.0, float(n["proxy_cpu_pct"])))
    w(f"| req/s per core ≥ 0.7× nginx, {kind}, c=64 | proxy on core 0 | {int(g['rps']):,} req/s | "
      f"{int(n['rps']):,} req/s | {ratio:.2f}× {ok(ratio >= 0.7)}; per proxy CPU-second {eff:.2f}× {ok(eff >= 0.7)} |")
w(f"| RSS idle ≤ 30 MB | — | {mb(env['RSS_IDLE']):.1f} MB | | {ok(mb(env['RSS_IDLE']) <= 30)} |")
w(f"| RSS under load ≤ 80 MB | — | {mb(env['RSS_HWM']):.1f} MB | | {ok(mb(env['RSS_HWM']) <= 80)} |")
for layout, probe in probes.items():
    d, g, n = probe["direct"], probe["gateway"], probe["nginx"]
    for pct in ("p50", "p99"):
        key = f"{pct}_us"
        ga, na = g[key] - d[key], n[key] - d[key]
        w(f"| streamed chunk forwarded within 100 µs ({pct}) | {layout} | {ga:.0f} µs | {na:.0f} µs | {ok(ga <= 100)} |")
w("")

generated = "\n".join(out) + "\n"
MARK = "<!-- Hand-written analysis below this line; scripts/bench.sh keeps it when it regenerates the file. -->"
kept = "\n## Where it falls short and why\n\n_(to be written after a run)_\n"
if os.path.exists(env["OUT"]):
    text = open(env["OUT"]).read()
    if MARK in text:
        kept = text.split(MARK, 1)[1]
open(env["OUT"], "w").write(generated + "\n" + MARK + kept)
print(generated)
EOF
log "wrote $OUT"
