"""The laptop tier against the team tier: each e2e test's wall time, and the Prefect API's latency while
it runs (SQLite against PostgreSQL under the same pipeline load).

Runs `tests/e2e/test_pipeline.py` (laptop: SQLite, local folders) and `tests/e2e/test_pipeline_team.py`
(team: PostgreSQL + S3) one after the other, each alone on the machine. During each, tests/api_probe.py
times one read (`POST /flow_runs/filter`) and one write (`POST /logs/`) against the Prefect API every half
second. The two tests do not run the same script (the laptop one waits for people, sends a label review
back, and tries two HPO trials; the team one starts two runs at once and restarts PostgreSQL), so compare
the latencies, not the wall times, across tiers.

Run: .venv/bin/python benchmarks/tier_e2e.py [--tiers laptop team]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = {"laptop": "tests/e2e/test_pipeline.py", "team": "tests/e2e/test_pipeline_team.py"}


def run_tier(tier: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.json"
        env = {**os.environ, "LOOPLINE_BENCH_API_PROBE_FILE": str(probe)}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", TESTS[tier]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"{TESTS[tier]} failed:\n{result.stdout[-4000:]}")
        measured = json.loads(probe.read_text())
    row: dict[str, object] = {"tier": tier, "wall_s": wall, "errors": len(measured["errors"])}
    for kind, samples in measured["samples"].items():
        ms = np.asarray(samples) * 1000
        row[kind] = {
            "n": len(ms),
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", nargs="+", choices=sorted(TESTS), default=["laptop", "team"])
    args = parser.parse_args()
    rows = {tier: run_tier(tier) for tier in args.tiers}
    header = f"{'tier':<8} {'e2e wall':>9} {'probe':>6} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}"
    print(header + " errors")
    for tier, row in rows.items():
        for kind in ("read", "write"):
            m = row[kind]
            assert isinstance(m, dict)
            print(
                f"{tier:<8} {row['wall_s']:>8.0f}s {kind:>6} {m['n']:>5} {m['p50']:>8.1f} {m['p99']:>8.1f} "
                f"{m['max']:>9.1f} {row['errors']}"
            )
    if len(rows) == 2:
        for kind in ("read", "write"):
            laptop, team = rows["laptop"][kind], rows["team"][kind]
            assert isinstance(laptop, dict) and isinstance(team, dict)
            print(f"p99 {kind}: SQLite / PostgreSQL = {laptop['p99'] / team['p99']:.2f}x")


if __name__ == "__main__":
    main()
