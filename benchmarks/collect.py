"""Collect throughput: decode-check + SHA-256 + perceptual hash + near-duplicate search + storage.

Writes N small PNGs (default 10,000; 32x32 grey, all distinct), then in one run times
  1. the baseline: just reading every file's bytes,
  2. collect into a fresh local data root (every image decoded, hashed, de-duplicated, stored, manifest),
  3. collect again (already collected: checks everything, writes nothing),
and prints images/s for each and the ratios. Run: .venv/bin/python benchmarks/collect.py [--images N]

With ``--flow`` it also prices orchestration: the ``collect-images`` flow (flows/collect.py) against the
core ``collect(...)`` call on the same images, each into a fresh data root, alternating, against a real
Prefect server started here (free port, its own PREFECT_HOME, analytics off; stopped at the end).
Run: .venv/bin/python benchmarks/collect.py --flow [--images N] [--repeats R]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from loopline.data.collect import CollectOptions, collect
from loopline.data.sources import LocalFolderSource
from loopline.data.store import LocalStore


def write_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(6, 6), dtype=np.uint8)
        image = Image.fromarray(coarse, mode="L").resize((32, 32), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / f"img-{i:06d}.png").write_bytes(buffer.getvalue())


def read_all(folder: Path) -> int:
    source = LocalFolderSource(folder)
    return sum(len(source.read(f)) for f in source.list_files())


def timed(label: str, count: int, fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of ``repeats`` calls (the disk is shared and noisy); dirty pages flushed first."""
    times = []
    for _ in range(repeats):
        os.sync()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"{label:<30} {seconds:7.2f} s  {count / seconds:9.0f} images/s  (runs: {runs})")
    return seconds


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A Prefect server on a free loopback port with its own home; yields its API URL."""
    import httpx

    from loopline.services.process import free_port

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("wb")
    prefect = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(
                    "Prefect server did not start:\n" + (home / "server.log").read_text()[-2000:]
                )
            time.sleep(0.5)
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def price_orchestration(src: Path, tmp: Path, n: int, repeats: int) -> None:
    """The collect-images flow against the core call, same images, fresh data roots, alternating."""
    with prefect_server(tmp / "prefect-home") as api:
        os.environ["PREFECT_API_URL"] = api
        os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # flows/ and tasks/ live at the root
        from flows.collect import collect_flow
        from tasks.collect import CollectParameters

        warm_up = CollectParameters(source=str(src), data_root=str(tmp / "flow-warm-up"))
        collect_flow(warm_up)  # imports, API client, flow registration
        core, orchestrated, core_cpu, flow_cpu = [], [], [], []
        for i in range(repeats):
            os.sync()
            start, cpu = time.perf_counter(), cpu_seconds()
            collect(LocalFolderSource(src), LocalStore(tmp / f"core-{i}"))
            core.append(time.perf_counter() - start)
            core_cpu.append(cpu_seconds() - cpu)
            os.sync()
            start, cpu = time.perf_counter(), cpu_seconds()
            collect_flow(CollectParameters(source=str(src), data_root=str(tmp / f"flow-{i}")))
            orchestrated.append(time.perf_counter() - start)
            flow_cpu.append(cpu_seconds() - cpu)
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogHandler

        fresh_core, fresh_flow = in_fresh_processes(src, tmp, api, repeats)
        APILogHandler().flush()  # send the last logs and events while the server still answers
        EventsWorker.drain_all(timeout=10)
        published = check_published(api, 2 * repeats + 1)
    c, f = statistics.median(core), statistics.median(orchestrated)
    print(f"core collect(...)              {c:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in core)})")
    print(f"collect-images flow            {f:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in orchestrated)})")
    ratios = sorted(o / k for o, k in zip(orchestrated, core, strict=True))
    cc, fc = statistics.median(core_cpu), statistics.median(flow_cpu)
    print(f"orchestration price: flow / core = {f / c:.3f}x wall on {n} images (target <= 1.15x)")
    print(f"  per-pair wall ratios: {', '.join(f'{x:.3f}' for x in ratios)}")
    print(f"  CPU (this process + its workers): core {cc:.2f} s, flow {fc:.2f} s, {fc / cc:.3f}x")
    print(f"  {published}")
    fc_, ff_ = statistics.median(fresh_core), statistics.median(fresh_flow)
    print(f"fresh process, core: python -c 'collect(...)'   {fc_:7.2f} s  (runs: {_runs(fresh_core)})")
    print(f"fresh process, flow: python -m flows.collect    {ff_:7.2f} s  (runs: {_runs(fresh_flow)})")
    print(f"  fresh-process price (Prefect import, client, workers under a Prefect main): {ff_ / fc_:.3f}x")


def _runs(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


CORE_SCRIPT = (
    "import sys; from loopline.data.collect import collect; from loopline.data.sources import "
    "LocalFolderSource; from loopline.data.store import LocalStore; "
    "collect(LocalFolderSource(sys.argv[1]), LocalStore(sys.argv[2]))"
)


def in_fresh_processes(src: Path, tmp: Path, api: str, repeats: int) -> tuple[list[float], list[float]]:
    """Each side in a new interpreter, as a worker starts a flow run: the flow's main module imports
    Prefect (a deployment's is prefect.engine), which collect's worker processes must not pay for again."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    core, orchestrated = [], []
    for i in range(repeats):
        os.sync()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", CORE_SCRIPT, str(src), str(tmp / f"fresh-core-{i}")], env=env, check=True
        )
        core.append(time.perf_counter() - start)
        os.sync()
        start = time.perf_counter()
        flow_env = {**env, "PREFECT_API_URL": api, "LOOPLINE_DATA_ROOT": str(tmp / f"fresh-flow-{i}")}
        subprocess.run(
            [sys.executable, "-m", "flows.collect", str(src)],
            env=flow_env,
            cwd=root,
            check=True,
            capture_output=True,
        )
        orchestrated.append(time.perf_counter() - start)
    return core, orchestrated


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (collect's worker processes):
    steadier than wall time on a shared machine."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def check_published(api: str, flow_runs: int) -> str:
    """The flow still publishes its artifacts: one of each key per flow run."""
    import httpx

    artifacts = httpx.post(f"{api}/artifacts/filter", json={"limit": 200}, timeout=10).json()
    keys = Counter(a["key"] for a in artifacts)
    missing = {
        k: keys[k] for k in ("collect-progress", "collect-counts", "collect-summary") if keys[k] != flow_runs
    }
    if missing:
        raise RuntimeError(f"artifacts per key {dict(keys)}; expected {flow_runs} of each")
    tasks = httpx.post(f"{api}/task_runs/count", json={}, timeout=10).json()
    return f"published: {dict(sorted(keys.items()))}, {tasks / flow_runs:g} task run(s) per flow run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=CollectOptions().workers)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flow", action="store_true", help="Price the collect-images flow vs the core.")
    args = parser.parse_args()
    n, r = args.images, args.repeats
    if args.flow:
        with tempfile.TemporaryDirectory() as tmp:
            write_images(Path(tmp) / "src", n)
            read_all(Path(tmp) / "src")
            price_orchestration(Path(tmp) / "src", Path(tmp), n, r)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        write_images(src, n)
        options = CollectOptions(workers=args.workers)
        print(f"{n} PNGs of 32x32 px, {os.cpu_count()} CPUs, {args.workers} I/O threads, median of {r} runs")
        read_all(src)  # warm the page cache so both sides read from memory
        roots = iter([LocalStore(Path(tmp) / f"data-{i}") for i in range(r)])
        store = LocalStore(Path(tmp) / "data-0")
        baseline = timed("baseline: read bytes", n, lambda: read_all(src), r)
        first = timed(
            "collect (new data root)", n, lambda: collect(LocalFolderSource(src), next(roots), options), r
        )
        again = timed(
            "collect again (nothing new)", n, lambda: collect(LocalFolderSource(src), store, options), r
        )
        print(
            f"ratio collect / read-bytes throughput: {baseline / first:.3f}  (again: {baseline / again:.3f})"
        )
        print(
            f"collect throughput: {n / first:.0f} images/s (target >= 2000); again: {n / again:.0f} images/s"
        )


if __name__ == "__main__":
    main()
