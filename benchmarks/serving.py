"""Model serving: ``loopline serve`` against ``mlflow models serve`` on the same registered ONNX model.

The script starts its own MLflow server, logs the small CNN (random weights, 32x32 input, 10 classes)
exported to ONNX the way training logs it (``model/``, ``class_mapping.json``, ``splits.json``) and
registers it as version 1 with the champion alias. Both servers load ``models:/NAME/1`` (loopline through
the alias), run side by side on the same machine for the whole run and take turns under load (MLflow, then
loopline's two routes, at each concurrency: each comparison sees the same background load; the idle server
waits), and get the same image: one 32x32 digit PNG (scikit-learn's digits, rendered like the demo's),
sent as PNG bytes to ``/v1/predict`` and as the same preprocessed FP32 tensor to MLflow's ``/invocations``
and to loopline's v2 infer route.

1. Saturation, closed loop: ``wrk -t1 -cN -dDs --latency`` at N = 1, 8, 32 (Lua script
   ``benchmarks/wrk/post.lua`` for the POST body), for MLflow, loopline /v1/predict and loopline v2.
2. Fixed rate, open loop: half of MLflow's best requests/s, sent for D seconds by one lean asyncio HTTP/1.1
   client (``open_loop``, the same for every server); latency counts from each request's *scheduled* send
   time, so a server that falls behind cannot hide its queueing (no coordinated omission).
3. Hot reload under load: wrk runs against /v1/predict while the alias moves to versions 2..11 (registered
   beforehand from the same run) and ``POST /admin/reload`` follows each move; every non-200 response and
   socket error counts as a failure (target 0).
Plus each server's time from process start to ready.

Both servers run as many worker processes as the machine has cores (``--workers``): ``mlflow models serve
--workers N`` and ``LOOPLINE_SERVING_WORKERS=N``.

Run: .venv/bin/python benchmarks/serving.py [--duration 10] [--quick] [--repeats 1] [--workers N]
Needs ``wrk`` (apt-get install wrk). Ratios are loopline / MLflow; numbers from a shared 2-core machine
are noisy: use ``--repeats`` for medians.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"
NAME = "bench-serving"
SIZE = 32
LABELS = [str(d) for d in range(10)]


@dataclass
class Load:
    """One load run: requests/s, latency percentiles (ms) and failures (non-2xx + socket errors)."""

    rps: float
    p50: float
    p99: float
    failures: int = 0
    requests: int = 0


@dataclass(frozen=True)
class Target:
    label: str
    url: str
    body: Path
    content_type: str


# --- the registered model ------------------------------------------------------------------------------


def log_and_register(tracking_uri: str, tmp: Path) -> tuple[str, str]:
    """Log the small CNN as training does and register it as version 1 (champion); the run id."""
    import mlflow.onnx
    import onnx

    from loopline.registry.registry import CHAMPION, move_alias, register_run
    from loopline.training.models import build_model
    from loopline.training.onnx_export import export_onnx, onnx_pip_requirements

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving-benchmark")
    path = export_onnx(build_model("small_cnn", len(LABELS)), SIZE, tmp / "model.onnx")
    with mlflow.start_run() as run:
        mlflow.log_dict({"labels": LABELS, "input_size": SIZE}, "class_mapping.json")
        mlflow.log_dict({"train": [], "val": [], "test": []}, "splits.json")
        mlflow.onnx.log_model(
            onnx.load(str(path)),
            name="model",
            input_example=np.zeros((1, 3, SIZE, SIZE), dtype=np.float32),
            pip_requirements=onnx_pip_requirements(),
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    client = mlflow.MlflowClient(tracking_uri)
    version = register_run(client, NAME, run.info.run_id, {}, "serving benchmark").version
    move_alias(client, NAME, CHAMPION, version, "benchmark", "serve it")
    return run.info.run_id, version


def write_bodies(tmp: Path) -> tuple[Path, Path, Path]:
    """The same digit as a PNG, as MLflow's ``{"inputs": ...}`` and as a v2 FP32 request."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from loopline.data.demo import png_bytes, render_digit
    from loopline.serving.preprocess import preprocess

    png = png_bytes(render_digit(load_digits().data[0], SIZE))
    tensor = preprocess(Image.open(io.BytesIO(png)), SIZE)[None]
    v2 = {
        "inputs": [
            {
                "name": "image",
                "shape": list(tensor.shape),
                "datatype": "FP32",
                "data": tensor.ravel().tolist(),
            }
        ]
    }
    paths = tmp / "digit.png", tmp / "mlflow.json", tmp / "v2.json"
    paths[0].write_bytes(png)
    paths[1].write_text(json.dumps({"inputs": tensor.tolist()}))
    paths[2].write_text(json.dumps(v2))
    return paths


# --- servers ---------------------------------------------------------------------------------------------


@contextmanager
def server(command: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[float]:
    """Run ``command`` (its own process group) until the block exits; yields seconds from start to ready."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            with httpx.Client(timeout=2) as client:
                while True:
                    if process.poll() is not None:
                        sys.exit(f"{command[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
                    try:
                        if client.get(ready_url).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        sys.exit(f"{ready_url} not ready after 180 s:\n{log.read_text()[-3000:]}")
                    time.sleep(0.05)
            yield time.perf_counter() - started
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def base_env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow models serve runs uvicorn via bash
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def check(target: Target) -> str:
    """One request must answer 200; the predicted class, to compare the servers."""
    answer = httpx.post(
        target.url,
        content=target.body.read_bytes(),
        headers={"Content-Type": target.content_type},
        timeout=30,
    )
    if answer.status_code != 200:
        sys.exit(f"{target.label}: {answer.status_code} {answer.text[:500]}")
    body = answer.json()
    predictions = body.get("predictions")
    if isinstance(predictions, dict):  # MLflow: {"predictions": {"logits": [[...]]}}
        return str(int(np.argmax(predictions["logits"][0])))
    if isinstance(predictions, list):  # /v1/predict: [{"label": ..., "top_k": ...}]
        return str(predictions[0]["label"])
    return str(int(np.argmax(body["outputs"][0]["data"])))  # v2: outputs[0] is logits


# --- load ------------------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * UNITS[unit]


def wrk(target: Target, connections: int, duration: float) -> Load:
    env = {**os.environ, "BODY": str(target.body), "CONTENT_TYPE": target.content_type}
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(LUA),
        target.url,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60).stdout
    return _parse_wrk(output, target.label)


async def open_loop(target: Target, rate: float, duration: float) -> Load:
    """Send at ``rate`` requests/s for ``duration`` s, whatever the answers; latency from scheduled time.

    A lean HTTP/1.1 client (asyncio streams, the request's bytes built once, keep-alive connections reused,
    a new one opened whenever all are busy), so the client's own time stays small next to the servers'.
    Against one loopline server at 80 requests/s, httpx's client measured p50 4.1-4.3 ms, this one
    2.6 ms (the rest is mostly the event loop's timer waking up to 1 ms late)."""
    url = httpx.URL(target.url)
    host, port = url.host, url.port or 80
    body = target.body.read_bytes()
    request = (
        f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {target.content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        failures += not await send(reuse=True)
        latencies.append(time.perf_counter() - scheduled)

    async def send(reuse: bool) -> bool:
        """One request on an idle connection (or a new one); True when answered 200. A kept-alive
        connection the server closed meanwhile (its idle timeout) is retried once on a new connection, as
        HTTP clients do; any other error, a timeout or a non-200 answer is a failure."""
        while reuse and idle and idle[-1][0].at_eof():
            idle.pop()[1].close()
        reused = reuse and bool(idle)
        reader, writer = idle.pop() if reused else await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            status, keep_alive = await asyncio.wait_for(read_response(reader), timeout=10)
        except asyncio.IncompleteReadError as exc:
            writer.close()
            return reused and not exc.partial and await send(reuse=False)
        except (OSError, TimeoutError, ValueError):
            writer.close()
            return False
        if keep_alive:
            idle.append((reader, writer))
        else:
            writer.close()
        return status == 200

    for _ in range(20):  # warm up, on one connection
        await one(time.perf_counter())
    latencies.clear()
    tasks = []
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for _, writer in idle:
        writer.close()
    ms = np.asarray(latencies) * 1000
    return Load(total / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), failures, total)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One HTTP/1.1 response read to its end (Content-Length or chunked): its status and whether the
    connection stays open."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
    fields = {name.strip().lower(): value.strip().lower() for name, value in headers.items()}
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, fields.get("connection") != "close"


def median_load(runs: list[Load]) -> Load:
    return Load(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50 for r in runs),
        statistics.median(r.p99 for r in runs),
        sum(r.failures for r in runs),
        sum(r.requests for r in runs),
    )


def reload_under_load(
    target: Target, admin: str, token: str, tracking_uri: str, run_id: str, reloads: int, connections: int
) -> tuple[Load, list[float], list[str]]:
    """wrk on /v1/predict while the champion moves to versions 2..reloads+1, each followed by a reload."""
    from loopline.registry.registry import CHAMPION, move_alias

    client = mlflow.MlflowClient(tracking_uri)
    versions = []
    for _ in range(reloads):  # registered before the load, so only the reloads happen under it
        created = client.create_model_version(NAME, source=f"runs:/{run_id}/model", run_id=run_id)
        versions.append(str(created.version))
    gap = 0.8
    duration = 2 + reloads * (gap + 0.5) + 2
    env = {**os.environ, "BODY": str(target.body), "CONTENT_TYPE": target.content_type}
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{round(duration)}s",
        "--latency",
        "-s",
        str(LUA),
        target.url,
    ]
    load = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    times, outcomes = [], []
    try:
        time.sleep(2)
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
            for version in versions:
                move_alias(client, NAME, CHAMPION, version, "benchmark", "hot reload under load")
                started = time.perf_counter()
                answer = http.post(admin)
                times.append(time.perf_counter() - started)
                outcomes.append(
                    f"{answer.status_code}:{answer.json().get('outcome')}:{answer.json().get('version')}"
                )
                time.sleep(gap)
        output, _ = load.communicate(timeout=duration + 60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    parsed = _parse_wrk(output, target.label)
    return parsed, times, outcomes


def _parse_wrk(output: str, label: str) -> Load:
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
        p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
        requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    except AttributeError:
        sys.exit(f"unexpected wrk output for {label}:\n{output}")
    failures = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failures += sum(int(n) for n in socket.groups()) if socket else 0
    return Load(rps, p50, p99, failures, requests)


# --- the run ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of each load run (default 10).")
    parser.add_argument("--quick", action="store_true", help="3 s runs, concurrency 1 and 32 only.")
    parser.add_argument("--repeats", type=int, default=1, help="Load runs per cell; medians are printed.")
    parser.add_argument("--reloads", type=int, default=10, help="Hot reloads under load (default 10).")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="Worker processes of each server (cores)."
    )
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    duration = 3.0 if args.quick and args.duration == 10.0 else args.duration
    concurrencies = (1, 32) if args.quick else (1, 8, 32)
    from loopline.services.process import free_port
    from loopline.services.standalone import running_service

    wall = time.perf_counter()
    print(f"load average before the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    closed: dict[tuple[str, int], Load] = {}
    fixed: dict[str, Load] = {}
    with (
        tempfile.TemporaryDirectory() as folder,
        running_service("mlflow", Path(folder) / "mlflow", ROOT) as (spec, _),
    ):
        tmp = Path(folder)
        run_id, version = log_and_register(spec.url, tmp)
        png, mlflow_json, v2_json = write_bodies(tmp)
        env = base_env(spec.url)
        # The version's own source (runs:/RUN/model): MLflow 3.17's `mlflow models serve -m models:/NAME/1`
        # fails with "No such artifact: 'MLmodel'" on versions registered from a runs:/ source (as
        # loopline's register_run does): the CLI resolves the URI without following it to the logged model.
        source = str(mlflow.MlflowClient(spec.url).get_model_version(NAME, version).source)

        def saturate(target: Target, c: int) -> None:
            closed[target.label, c] = median_load([wrk(target, c, duration) for _ in range(args.repeats)])
            load = closed[target.label, c]
            print(
                f"  {target.label:<18} c={c:<3} {load.rps:9.1f} req/s  p50 {load.p50:7.2f} ms  "
                f"p99 {load.p99:7.2f} ms  failures {load.failures}",
                flush=True,
            )

        def at_rate(target: Target, rate: float) -> None:
            runs = [asyncio.run(open_loop(target, rate, duration)) for _ in range(args.repeats)]
            fixed[target.label] = load = median_load(runs)
            print(
                f"  {target.label:<18} open loop {load.rps:7.1f} req/s  p50 {load.p50:7.2f} ms  "
                f"p99 {load.p99:7.2f} ms  failures {load.failures}",
                flush=True,
            )

        mlflow_port = free_port()
        mlflow_cmd = [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            source,
            "--env-manager",
            "local",
            "--workers",
            str(args.workers),
            "-h",
            "127.0.0.1",
            "-p",
            str(mlflow_port),
        ]
        baseline = Target(
            "mlflow /invocations",
            f"http://127.0.0.1:{mlflow_port}/invocations",
            mlflow_json,
            "application/json",
        )
        port = free_port()
        while port == mlflow_port:  # both servers run at once
            port = free_port()
        token = secrets.token_hex(16)
        loopline_env = {
            **env,
            "LOOPLINE_HOME": str(tmp / "home"),
            "LOOPLINE_MLFLOW_TRACKING_URI": spec.url,
            "LOOPLINE_SERVING_ADMIN_TOKEN": token,
            "LOOPLINE_SERVING_WORKERS": str(args.workers),
            "LOOPLINE_PROJECT_ROOT": str(ROOT),
        }
        loopline_cmd = [
            str(BIN / "loopline"),
            "serve",
            "--model",
            NAME,
            "--alias",
            "champion",
            "--port",
            str(port),
            "--poll-seconds",
            "0",
        ]
        base = f"http://127.0.0.1:{port}"
        v1 = Target("loopline /v1/predict", f"{base}/v1/predict", png, "image/png")
        v2 = Target("loopline v2 infer", f"{base}/v2/models/{NAME}/infer", v2_json, "application/json")
        with (
            server(
                mlflow_cmd, env, f"{baseline.url.rpartition('/')[0]}/ping", tmp / "mlflow-serve.log"
            ) as mlflow_ready,
            server(
                loopline_cmd, loopline_env, f"{base}/v2/health/ready", tmp / "loopline-serve.log"
            ) as ready,
        ):
            print(
                f"mlflow models serve ready in {mlflow_ready:.1f} s; predicts {check(baseline)}; "
                f"loopline serve ready in {ready:.1f} s; predicts {check(v1)} (v1), {check(v2)} (v2)",
                flush=True,
            )
            for c in concurrencies:  # the servers take turns, so each comparison sees the same background
                for target in (baseline, v1, v2):
                    saturate(target, c)
            rate = max(closed[baseline.label, c].rps for c in concurrencies) / 2
            for target in (baseline, v1, v2):
                at_rate(target, rate)
            reload_load, reload_times, outcomes = reload_under_load(
                v1, f"{base}/admin/reload", token, spec.url, run_id, args.reloads, 8
            )
            final = httpx.post(v1.url, content=png.read_bytes(), headers={"Content-Type": "image/png"})
            served = final.headers.get("X-Model-Version")
    report(
        closed,
        fixed,
        concurrencies,
        rate,
        duration,
        args.repeats,
        args.workers,
        baseline,
        (v1, v2),
        (mlflow_ready, ready),
        reload_load,
        reload_times,
        outcomes,
        served,
        time.perf_counter() - wall,
    )


def report(
    closed: dict[tuple[str, int], Load],
    fixed: dict[str, Load],
    concurrencies: tuple[int, ...],
    rate: float,
    duration: float,
    repeats: int,
    workers: int,
    baseline: Target,
    ours: tuple[Target, Target],
    ready: tuple[float, float],
    reload_load: Load,
    reload_times: list[float],
    outcomes: list[str],
    served: str | None,
    wall: float,
) -> None:
    print()
    print(
        f"Serving benchmark: small CNN ONNX, 32x32, same image; wrk -t1 -d{duration:.0f}s, "
        f"median of {repeats}; {workers} worker process(es) per server; load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (shared 2-core machine: noisy)"
    )
    header = f"{'server':<22}{'load':<14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'fail':>6}"
    header += f"{'x req/s':>9}{'x p99':>8}"
    print(header)
    print("-" * len(header))
    for target in (baseline, *ours):
        for c in concurrencies:
            load, base = closed[target.label, c], closed[baseline.label, c]
            ratio = f"{load.rps / base.rps:9.2f}{load.p99 / base.p99:8.3f}" if target is not baseline else ""
            print(
                f"{target.label:<22}{f'closed c={c}':<14}{load.rps:10.1f}{load.p50:9.2f}{load.p99:9.2f}"
                f"{load.failures:6d}{ratio}"
            )
    for target in (baseline, *ours):
        load, base = fixed[target.label], fixed[baseline.label]
        ratio = f"{'':9}{load.p99 / base.p99:8.3f}" if target is not baseline else ""
        print(
            f"{target.label:<22}{f'open {rate:.0f}/s':<14}{load.rps:10.1f}{load.p50:9.2f}{load.p99:9.2f}"
            f"{load.failures:6d}{ratio}"
        )
    print()
    best = {t.label: max(closed[t.label, c].rps for c in concurrencies) for t in (baseline, *ours)}
    for target in ours:
        print(
            f"{target.label}: saturation {best[target.label]:.0f} vs {best[baseline.label]:.0f} req/s = "
            f"{best[target.label] / best[baseline.label]:.2f}x (target >= 10x); p99 at {rate:.0f}/s "
            f"{fixed[target.label].p99 / fixed[baseline.label].p99:.3f}x (target <= 0.1x); "
            f"p50 at c=1 {closed[target.label, 1].p50:.2f} ms (target <= 2 ms)"
        )
    print(
        f"time from process start to ready: mlflow models serve {ready[0]:.1f} s, "
        f"loopline serve {ready[1]:.1f} s"
    )
    loaded = sum(o.startswith("200:loaded:") for o in outcomes)
    print(
        f"hot reload under load (wrk c=8 on /v1/predict; champion moved to versions 2..{len(outcomes) + 1}, "
        f"one POST /admin/reload after each move): {loaded}/{len(outcomes)} answered 200 loaded; "
        f"{reload_load.requests} requests, {reload_load.failures} failed/non-200 (target 0), "
        f"{reload_load.rps:.0f} req/s, p99 {reload_load.p99:.2f} ms; a reload took median "
        f"{statistics.median(reload_times) * 1000:.0f} ms, max {max(reload_times) * 1000:.0f} ms; "
        f"X-Model-Version afterwards: {served}"
    )
    if loaded != len(outcomes):
        print(f"reload answers: {outcomes}")
    print(f"whole run {wall:.0f} s")


if __name__ == "__main__":
    main()
