"""Load on the HTTP service: throughput and p50/p99 latency of single-example requests at 1, 8 and 32 clients.

The server is a separate ``vaekit serve`` process on a free loopback port. The load client is ``wrk``
(Debian's package: ``apt-get install wrk``), a C program, so that on 2 cores the client takes little of the
CPU the server needs; it runs one thread with C keep-alive connections (C concurrent clients, each sending
its next request when the last answer arrives). Each level is bounded twice: it stops after a fixed number
of requests or after a time limit, whichever comes first (a level that hits the time limit says so). Every
answer is checked: a status other than 200, an answer without the expected field, or a socket error counts
as an error, and any error makes the script exit non-zero.

Train the model first (2 epochs of the classic MNIST MLP)::

    vaekit train --preset mnist-mlp --epochs 2 --data-dir ../shared/data/mnist --out runs/mnist-mlp-serve --quiet
    flock /tmp/vaekit-bench.lock python benchmarks/serve_load.py --model runs/mnist-mlp-serve

Target: p99 under 50 ms at 8 concurrent clients for single-example requests on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_MNIST, save, table

TARGET_P99_MS = 50.0
TARGET_CLIENTS = 8
WARMUP_REQUESTS = 300

# wrk script: POST a fixed JSON body, check every answer, stop after $REQUESTS answers, report as JSON. wrk
# itself always waits out its -d duration, so the time the requests took is measured here (monotonic clock).
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } vk_timespec; int clock_gettime(int, vk_timespec *); ]]
local clock = ffi.new("vk_timespec")
local function now() ffi.C.clock_gettime(1, clock); return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = file:read("*a")
file:close()
local expect = os.getenv("EXPECT")
local limit = tonumber(os.getenv("REQUESTS"))
local threads = {}

function setup(thread) table.insert(threads, thread) end
function init(args) answers = 0; bad = 0; started = now(); last = started end
function response(status, headers, body)
  answers = answers + 1
  last = now()
  if status ~= 200 or not string.find(body, expect, 1, true) then bad = bad + 1 end
  if answers >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local bad, seconds = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("bad")
    seconds = math.max(seconds, thread:get("last") - thread:get("started"))
  end
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %d, "seconds": %.6f, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"socket_errors": %d, "status_errors": %d, "bad_answers": %d}\n',
    summary.requests, seconds, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status, bad))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status)


def start_server(model: str, threads: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "vaekit", "serve", model, "--port", str(port), "--quiet"]
    with log.open("wb") as handle:
        proc = subprocess.Popen([*command, "--threads", str(threads)], stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if get(f"{url}/healthz") == 200:
                return proc, url
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def mnist_example(model_dir: str, data_dir: str) -> list[Any]:
    """The first MNIST test image in the model's input space, as a (1, 1, 28, 28) nested list."""
    from vaekit.models.inputs import examples_for as load_examples_for
    from vaekit.models.serialization import load

    examples = load_examples_for(load(model_dir), None, data_dir)
    return examples.batch(np.arange(1)).numpy().tolist()


def run_wrk(url: str, script: Path, body: Path, expect: str, clients: int, requests: int, seconds: float) -> dict:
    env = {"BODY_FILE": str(body), "EXPECT": expect, "REQUESTS": str(requests), "PATH": "/usr/bin:/bin"}
    command = ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model or run directory (a trained mnist-mlp)")
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST), help="folder of the MNIST IDX files")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=5000, help="requests per level (default 5000)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per request in the server (1)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs the wrk load generator: apt-get install wrk")
    version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()

    folder = Path(tempfile.mkdtemp(prefix="vaekit-serve-load-"))
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT)
    endpoints = {  # path: (body, a string every good answer contains)
        "/v1/encode": ({"x": mnist_example(args.model, args.data_dir)}, '"log_var"'),
        "/v1/sample": ({"n": 1}, '"seed"'),
    }
    proc, url = start_server(args.model, args.threads, folder / "server.log")
    rows = []
    try:
        for path, (body, expect) in endpoints.items():
            body_file = folder / f"{path.rsplit('/', 1)[-1]}.json"
            body_file.write_text(json.dumps(body))
            run_wrk(url + path, script, body_file, expect, 8, WARMUP_REQUESTS, 10)
            for clients in (int(c) for c in args.clients.split(",")):
                r = run_wrk(url + path, script, body_file, expect, clients, args.requests, args.max_seconds)
                seconds = r["seconds"]
                row = {
                    "endpoint": path,
                    "clients": clients,
                    "requests": r["requests"],
                    "errors": r["socket_errors"] + r["status_errors"] + r["bad_answers"],
                    "seconds": round(seconds, 2),
                    "req_per_s": round(r["requests"] / seconds, 1),
                    "p50_ms": round(r["p50_us"] / 1000, 2),
                    "p99_ms": round(r["p99_us"] / 1000, 2),
                    "max_ms": round(r["max_us"] / 1000, 2),
                    "hit_time_limit": r["requests"] < args.requests,
                }
                rows.append(row)
                print(f"{path} x {clients} clients: {row['req_per_s']} req/s, p99 {row['p99_ms']} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(table(rows))
    at_target = [r for r in rows if r["clients"] == TARGET_CLIENTS]
    met = all(r["p99_ms"] < TARGET_P99_MS for r in at_target) if at_target else None
    errors = sum(r["errors"] for r in rows)
    path = save(
        "serve_load",
        {
            "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
            "model": args.model,
            "client": f"{version}, 1 thread, one keep-alive connection per client, same machine (loopback)",
            "server": f"vaekit serve --threads {args.threads} (uvicorn, one process)",
            "requests_per_level": args.requests,
            "max_seconds_per_level": args.max_seconds,
            "target": f"p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients",
            "target_met": met,
            "total_errors": errors,
            "rows": rows,
        },
    )
    shutil.rmtree(folder, ignore_errors=True)
    print(f"target p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients: {'met' if met else 'MISSED'}")
    print(f"errors: {errors}; wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
