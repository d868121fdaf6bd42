"""Load on the HTTP service: throughput and p50/p99 latency of single-example requests at 1, 8 and 32 clients.

The server is a separate ``vaekit serve`` process on a free loopback port; the load client is httpx's async
client in this process (one keep-alive connection per concurrent client). Each level is bounded twice: a
fixed number of requests and a time limit; a level that hits the time limit says so. Every answer is checked
(status 200 and the expected shape); any error makes the script exit non-zero.

Train the model first (2 epochs of the classic MNIST MLP, about a minute on 2 cores)::

    vaekit train --preset mnist-mlp --epochs 2 --data-dir ../shared/data/mnist --out runs/mnist-mlp-serve --quiet
    flock /tmp/vaekit-bench.lock python benchmarks/serve_load.py --model runs/mnist-mlp-serve

Target: p99 under 50 ms at 8 concurrent clients for single-example requests on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from common import DEFAULT_MNIST, save, table

TARGET_P99_MS = 50.0
TARGET_CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, threads: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vaekit",
        "serve",
        model,
        "--port",
        str(port),
        "--quiet",
        "--threads",
        str(threads),
    ]
    with log.open("wb") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def test_examples(model_dir: str, data_dir: str, count: int) -> list[list[Any]]:
    """``count`` MNIST test images in the model's input space, each as a (1, 1, 28, 28) nested list."""
    from vaekit._verbs import load_examples_for
    from vaekit.serialization import load

    examples = load_examples_for(load(model_dir), None, data_dir)
    x = examples.batch(np.arange(count)).numpy()  # (count, 1, 28, 28)
    return [x[i : i + 1].tolist() for i in range(count)]


async def run_level(
    url: str,
    path: str,
    bodies: list[dict[str, Any]],
    expected_shape: tuple[int, ...],
    key: str,
    clients: int,
    requests: int,
    max_seconds: float,
) -> dict[str, Any]:
    """``requests`` POSTs from ``clients`` concurrent workers (or fewer if ``max_seconds`` runs out)."""
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for body in bodies[: max(clients, 8)]:  # warm-up: open the connections, touch every code path
            await client.post(path, json=body)
        start = time.perf_counter()
        deadline = start + max_seconds

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                body = bodies[issued % len(bodies)]
                issued += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                    ok = response.status_code == 200 and np.shape(response.json()[key]) == expected_shape
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "endpoint": path,
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "hit_time_limit": len(latencies) < requests,
        "first_errors": errors[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model or run directory (a trained mnist-mlp)")
    parser.add_argument("--data-dir", default=str(DEFAULT_MNIST), help="folder of the MNIST IDX files")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per level (default 2000)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per request in the server (1)")
    args = parser.parse_args()

    x_bodies = [{"x": x} for x in test_examples(args.model, args.data_dir, 64)]
    sample_bodies = [{"n": 1, "seed": seed} for seed in range(64)]
    log = Path("/tmp") / f"vaekit-serve-load-{int(time.time())}.log"
    proc, url = start_server(args.model, args.threads, log)
    rows = []
    try:
        for path, bodies, key, shape in (
            ("/v1/encode", x_bodies, "mean", (1, 20)),
            ("/v1/sample", sample_bodies, "x", (1, 1, 28, 28)),
        ):
            for clients in (int(c) for c in args.clients.split(",")):
                row = asyncio.run(run_level(url, path, bodies, shape, key, clients, args.requests, args.max_seconds))
                rows.append(row)
                print(f"{path} x {clients} clients: {row['req_per_s']} req/s, p99 {row['p99_ms']} ms", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(table([{k: v for k, v in r.items() if k != "first_errors"} for r in rows]))
    at_target = [r for r in rows if r["clients"] == TARGET_CLIENTS]
    met = all(r["p99_ms"] < TARGET_P99_MS for r in at_target) if at_target else None
    errors = sum(r["errors"] for r in rows)
    path = save(
        "serve_load",
        {
            "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
            "model": args.model,
            "client": f"httpx {httpx.__version__} AsyncClient, one keep-alive connection per client, same machine",
            "server": f"vaekit serve --threads {args.threads} (uvicorn, one process), loopback",
            "requests_per_level": args.requests,
            "max_seconds_per_level": args.max_seconds,
            "target": f"p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients",
            "target_met": met,
            "total_errors": errors,
            "rows": rows,
        },
    )
    print(f"target p99 < {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients: {'met' if met else 'MISSED'}")
    print(f"errors: {errors}; wrote {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
