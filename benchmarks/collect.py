"""Collect throughput: decode-check + SHA-256 + perceptual hash + near-duplicate search + storage.

Writes N small PNGs (default 10,000; 32x32 grey, all distinct), then in one run times
  1. the baseline: just reading every file's bytes,
  2. collect into a fresh local data root (every image decoded, hashed, de-duplicated, stored, manifest),
  3. collect again (already collected: checks everything, writes nothing),
and prints images/s for each and the ratios. Run: .venv/bin/python benchmarks/collect.py [--images N]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=CollectOptions().workers)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, r = args.images, args.repeats
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
