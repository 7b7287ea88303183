"""Router overhead: the same load sent straight to a loopline model server and through the A/B router.

The script starts its own MLflow server and registers the serving benchmark's small CNN (``serving.py``:
random weights, 32x32 input, 10 classes, ONNX as training logs it), starts one ``loopline serve`` (one
worker) and one router (``python -m loopline.rollout.router_runner``) whose experiment state sends half the
users to each arm, both arms being that same model server, so the two paths differ by the router alone.
wrk sends no user header, so every request's user key is its generated request id and both arms, the
hashing and the event recording all run.

For each concurrency (1, 8, 32; closed loop, ``wrk -t1 -cN --latency``, POST of one 32x32 PNG to
``/v1/predict`` through ``benchmarks/wrk/post.lua``) the direct and the routed runs alternate, ``--repeats``
times; the medians of p50 and p99 are printed, with the difference: what the router adds. Target: at most
0.5 ms at p50 (issue 11), and no ~40 ms delayed-ACK stall on either of the router's sides at c=1.

Run: .venv/bin/python benchmarks/router_overhead.py [--duration 5] [--repeats 3] [--quick]
Needs ``wrk`` (apt-get install wrk). On a shared 2-core machine wrk, the router and the model server
compete for the cores: the added time includes that competition, and the numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import (
    BIN,
    NAME,
    ROOT,
    Load,
    Target,
    base_env,
    check,
    log_and_register,
    server,
    write_bodies,
    wrk,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds of each wrk run (default 5).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating runs per cell (default 3).")
    parser.add_argument("--quick", action="store_true", help="Concurrency 1 and 32 only, 1 repeat, 3 s.")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    repeats, duration = (1, 3.0) if args.quick else (args.repeats, args.duration)
    concurrencies = (1, 32) if args.quick else (1, 8, 32)
    from loopline.rollout.events import ExperimentState
    from loopline.rollout.router_runner import state_to_json
    from loopline.services.process import free_port
    from loopline.services.standalone import running_service

    print(f"load average before the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        running_service("mlflow", Path(folder) / "mlflow", ROOT) as (spec, _),
    ):
        tmp = Path(folder)
        _, version = log_and_register(spec.url, tmp)
        png, _, _ = write_bodies(tmp)
        env = base_env(spec.url)
        serve_port, router_port = free_port(), free_port()
        serve_env = {
            **env,
            "LOOPLINE_HOME": str(tmp / "home"),
            "LOOPLINE_MLFLOW_TRACKING_URI": spec.url,
            "LOOPLINE_SERVING_WORKERS": "1",
            "LOOPLINE_PROJECT_ROOT": str(ROOT),
        }
        serve_cmd = [str(BIN / "loopline"), "serve", "--model", NAME, "--port", str(serve_port)]
        upstream = f"http://127.0.0.1:{serve_port}"
        state = ExperimentState(
            name="router-overhead",
            model=NAME,
            champion_version=version,
            challenger_version=version,
            champion_url=upstream,
            challenger_url=upstream,
            seed="bench",
            weight=0.5,
            step=0,
            status="running",
        )
        state_file = tmp / "state.json"
        state_file.write_text(json.dumps(state_to_json(state)))
        router_env = {**env, "LOOPLINE_ROUTER_PORT": str(router_port)}
        router_cmd = [sys.executable, "-m", "loopline.rollout.router_runner", "--state-file", str(state_file)]
        direct = Target("direct", f"{upstream}/v1/predict", png, "image/png")
        routed = Target("router", f"http://127.0.0.1:{router_port}/v1/predict", png, "image/png")
        with (
            server(serve_cmd, serve_env, f"{upstream}/v2/health/ready", tmp / "serve.log"),
            server(router_cmd, router_env, f"http://127.0.0.1:{router_port}/healthz", tmp / "router.log"),
        ):
            print(f"predicts {check(direct)} directly, {check(routed)} through the router", flush=True)
            results: dict[tuple[str, int], list[Load]] = {}
            cpu: dict[int, list[float]] = {}
            for c in concurrencies:
                for _ in range(repeats):
                    results.setdefault(("direct", c), []).append(wrk(direct, c, duration))
                    before = router_cpu(router_port)
                    load = wrk(routed, c, duration)
                    results.setdefault(("router", c), []).append(load)
                    cpu.setdefault(c, []).append((router_cpu(router_port) - before) / max(load.requests, 1))
                report(c, results[("direct", c)], results[("router", c)], statistics.median(cpu[c]))


def router_cpu(port: int) -> float:
    """The router process's CPU seconds so far (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith("process_cpu_seconds"))
    )


def report(c: int, direct: list[Load], routed: list[Load], cpu_per_request: float) -> None:
    def med(runs: list[Load], field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    failures = sum(r.failures for r in direct + routed)
    added_p50, added_p99 = med(routed, "p50") - med(direct, "p50"), med(routed, "p99") - med(direct, "p99")
    print(
        f"c={c:<3} direct p50 {med(direct, 'p50'):6.2f} ms p99 {med(direct, 'p99'):6.2f} ms "
        f"{med(direct, 'rps'):7.0f} req/s | router p50 {med(routed, 'p50'):6.2f} ms "
        f"p99 {med(routed, 'p99'):6.2f} ms {med(routed, 'rps'):7.0f} req/s | added p50 "
        f"{added_p50:+.2f} ms p99 {added_p99:+.2f} ms"
        f" | router CPU {cpu_per_request * 1e6:.0f} us/request | failures {failures}",
        flush=True,
    )


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f} s")
