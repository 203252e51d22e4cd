#!/usr/bin/env python3
"""Streamed-chunk forwarding probe (stdlib only).

Requests `"stream": true` chat completions from one or more targets and, for every SSE event that
carries the mock upstream's send stamp (`"x_mock_sent_ns"`, Unix ns, written by
`llm-gateway mock-upstream --chunk-interval-ms N` right before the write), records
receive_time - sent_time. The stamp is the last JSON member, so an event's stamp is complete once
its closing `}` has arrived; the receive time is taken right after the recv() that completed it.

Targets are probed alternately (one stream each, round robin) so drift affects all alike.

Usage: stream_probe.py [--streams N] [--out FILE.json] NAME=HOST:PORT [NAME=HOST:PORT ...]
Prints one summary line per target and, with --out, writes the raw samples as JSON.
"""

import argparse
import json
import math
import re
import socket
import sys
import time

STAMP = re.compile(rb'"x_mock_sent_ns":(\d+)\}')
BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "hello"}], "stream": True},
    separators=(",", ":"),
).encode()


def one_stream(host, port):
    """Runs one stream; returns [(chunk_index, delay_ns)]."""
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + BODY
    samples = []
    buf = b""
    pos = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            now = time.time_ns()
            if not data:
                break
            buf += data
            for m in STAMP.finditer(buf, pos):
                samples.append((len(samples), now - int(m.group(1))))
                pos = m.end()
    head = buf.split(b"\r\n", 1)[0]
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"stream_probe: {host}:{port} answered {head!r}: {buf[:300]!r}")
    if b"data: [DONE]" not in buf:
        raise SystemExit(f"stream_probe: {host}:{port} stream did not end with [DONE]")
    if not samples:
        raise SystemExit(
            f"stream_probe: {host}:{port} sent no stamped chunks (is the mock running with --chunk-interval-ms?)"
        )
    return samples


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("targets", nargs="+")
    args = ap.parse_args()
    targets = []
    for t in args.targets:
        name, _, addr = t.partition("=")
        host, _, port = addr.rpartition(":")
        targets.append((name, host, int(port)))
    # One unmeasured stream per target warms connection pools and code paths.
    for _, host, port in targets:
        one_stream(host, port)
    results = {name: {"all": [], "first": []} for name, _, _ in targets}
    for _ in range(args.streams):
        for name, host, port in targets:
            for index, delay in one_stream(host, port):
                results[name]["all"].append(delay / 1000.0)
                if index == 0:
                    results[name]["first"].append(delay / 1000.0)
    for name, r in results.items():
        a, f = r["all"], r["first"]
        print(
            f"PROBE {name} chunks={len(a)} p50_us={pct(a, 50):.1f} p90_us={pct(a, 90):.1f} "
            f"p99_us={pct(a, 99):.1f} max_us={max(a):.1f} first_p50_us={pct(f, 50):.1f} "
            f"first_p99_us={pct(f, 99):.1f}"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh)


if __name__ == "__main__":
    sys.exit(main())
