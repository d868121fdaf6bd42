"""Latency of ``POST /v1/recommend`` on the ML-100K model: throughput and p50/p99 at 1, 8 and 32 clients.

The server is a separate ``vaekit serve`` process on a free loopback port; the load comes from ``wrk`` (as in
``serve_load.py``, whose server and client helpers this reuses: C keep-alive connections, each sending its next
request when the last answer arrives, every answer checked). The request is a real one: the fold-in items of the
first test user of the model's own split (about 50 items), ``k = 20``.

Train the model first (the ``ml-100k`` preset, a few minutes), then measure::

    vaekit train --preset ml-100k --data ../shared/data/ml-100k/u.data --out runs/ml-100k --quiet
    flock /tmp/vaekit-bench.lock python benchmarks/recommend_latency.py --model runs/ml-100k

Target: p99 under 50 ms at 8 concurrent clients on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import save, table
from serve_load import TARGET_CLIENTS, TARGET_P99_MS, WARMUP_REQUESTS, WRK_SCRIPT, run_wrk, start_server


def request_body(model_dir: str, k: int) -> dict[str, Any]:
    """The fold-in items of the first test user of the model's own data, as a /v1/recommend body."""
    import numpy as np

    from vaekit.models.inputs import examples_for
    from vaekit.models.serialization import load

    model = load(model_dir)
    examples = examples_for(model, None, None)
    row = examples.batch(np.arange(1))[0]
    items = [model.preprocessing.items[i] for i in np.flatnonzero(row.numpy())]
    return {"items": items, "k": k}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model or run directory (the ml-100k preset, trained)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=5000, help="requests per level (default 5000)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per request in the server (1)")
    parser.add_argument("-k", type=int, default=20, help="items per answer (default 20)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs the wrk load generator: apt-get install wrk")
    version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    folder = Path(tempfile.mkdtemp(prefix="vaekit-recommend-load-"))
    script, body_file = folder / "post.lua", folder / "recommend.json"
    script.write_text(WRK_SCRIPT)
    body = request_body(args.model, args.k)
    body_file.write_text(json.dumps(body))
    proc, url = start_server(args.model, args.threads, folder / "server.log")
    rows = []
    try:
        run_wrk(url + "/v1/recommend", script, body_file, '"scores"', 8, WARMUP_REQUESTS, 10)
        for clients in (int(c) for c in args.clients.split(",")):
            r = run_wrk(url + "/v1/recommend", script, body_file, '"scores"', clients, args.requests, args.max_seconds)
            rows.append({
                "clients": clients, "requests": r["requests"],
                "errors": r["socket_errors"] + r["status_errors"] + r["bad_answers"],
                "req_per_s": round(r["requests"] / r["seconds"], 1), "p50_ms": round(r["p50_us"] / 1000, 2),
                "p99_ms": round(r["p99_us"] / 1000, 2), "max_ms": round(r["max_us"] / 1000, 2),
                "hit_time_limit": r["requests"] < args.requests,
            })
            print(rows[-1], flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(table(rows))
    at_target = [r for r in rows if r["clients"] == TARGET_CLIENTS]
    met = all(r["p99_ms"] < TARGET_P99_MS for r in at_target) if at_target else None
    errors = sum(r["errors"] for r in rows)
    path = save("recommend_latency", {
        "command": " ".join(["python", "benchmarks/recommend_latency.py", *sys.argv[1:]]),
        "model": args.model, "request": f"{len(body['items'])} items, k={args.k}",
        "client": f"{version}, 1 thread, one keep-alive connection per client, same machine (loopback)",
        "server": f"vaekit serve --threads {args.threads} (uvicorn, one process)",
        "target": f"p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients", "target_met": met,
        "total_errors": errors, "rows": rows,
    })
    shutil.rmtree(folder, ignore_errors=True)
    print(f"target p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients: {'met' if met else 'MISSED'}; "
          f"errors: {errors}; wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
