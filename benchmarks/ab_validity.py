"""The A/B statistics under peeking: validity (A/A experiments) and power (bad challengers), simulated.

(a) Validity: experiments whose arms are the same, checked after every batch of feedback rows; the share
that ever declares a difference (the always-valid interval excludes 0) must stay within alpha plus the
simulation error (Wilson 95 % interval shown), while the fixed-sample z-test checked the same way declares
one far more often. Also the share ever wrongly rolled back by the verdict's rules (minimum sample, then
worse beyond the margin / error rate above the tolerance).
(b) Power: samples on the challenger's arm (median and 90th percentile) before the verdict rolls back a
challenger 5 points less accurate, one that fails 5 % of requests and one twice as slow at p99; minutes at
the demo's traffic (loopline.rollout.demo_traffic.send_traffic: 20 requests/s, feedback for 60 % of the
answers) at the first ramp step (10 % of users) and at 50 %.
Run: .venv/bin/python benchmarks/ab_validity.py [--experiments 2000] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize, proportions_ztest

from loopline.rollout.sequential import difference_radius, quantile_interval
from loopline.rollout.stats import AbConfig

RATE, FEEDBACK_SHARE = 20.0, 0.6  # the demo client's defaults
CONFIG = AbConfig()


@dataclass(frozen=True)
class Arms:
    """Cumulative counts at each look: (experiments, looks) arrays, hits and rows per arm."""

    hits_a: NDArray[np.float64]
    n_a: NDArray[np.float64]
    hits_b: NDArray[np.float64]
    n_b: NDArray[np.float64]


def simulate(
    rng: np.random.Generator, experiments: int, looks: int, batch_a: int, batch_b: int, p_a: float, p_b: float
) -> Arms:
    n_a = np.broadcast_to(batch_a * np.arange(1, looks + 1, dtype=np.float64), (experiments, looks))
    n_b = np.broadcast_to(batch_b * np.arange(1, looks + 1, dtype=np.float64), (experiments, looks))
    hits_a = rng.binomial(batch_a, p_a, size=(experiments, looks)).cumsum(axis=1).astype(np.float64)
    hits_b = rng.binomial(batch_b, p_b, size=(experiments, looks)).cumsum(axis=1).astype(np.float64)
    return Arms(hits_a, n_a, hits_b, n_b)


def bounds(arms: Arms, t_opt: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    difference = arms.hits_b / arms.n_b - arms.hits_a / arms.n_a
    radius = difference_radius(arms.hits_a, arms.n_a, arms.hits_b, arms.n_b, CONFIG.alpha, t_opt)
    return difference - radius, difference + radius


def naive_z(arms: Arms) -> NDArray[np.float64]:
    """The pooled two-proportion z statistic (statsmodels' ``proportions_ztest``), vectorised."""
    pooled = (arms.hits_a + arms.hits_b) / (arms.n_a + arms.n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / arms.n_a + 1 / arms.n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((arms.hits_b / arms.n_b - arms.hits_a / arms.n_a) / se)


def share(flags: NDArray[np.bool_]) -> str:
    """Share of experiments flagged at any look, with its Wilson interval."""
    ever = np.asarray(flags.any(axis=1))
    count, total = int(ever.sum()), len(ever)
    low, high = proportion_confint(count, total, alpha=0.05, method="wilson")
    return f"{count / total:7.2%}  [{low:6.2%}, {high:6.2%}]"


def validity(rng: np.random.Generator, experiments: int) -> list[str]:
    lines = [
        f"(a) validity under peeking: {experiments} A/A experiments each, alpha = {CONFIG.alpha}, "
        "share that ever declares a difference [Wilson 95 %]",
        f"{'scenario':<62}{'always-valid':<28}{'fixed-sample z-test':<28}wrongly rolled back",
    ]
    scenarios = [
        ("accuracy 90 % both, 50/50, every 50 rows to 10,000/arm", 50, 50, 0.9, "feedback"),
        ("accuracy 90 % both, 10/90, every 10+90 rows to 2,000/18,000", 90, 10, 0.9, "feedback"),
        ("accuracy 50 % both, 50/50, every 50 rows to 10,000/arm", 50, 50, 0.5, "feedback"),
        ("error rate 1 % both, 50/50, every 100 requests to 20,000/arm", 100, 100, 0.01, "requests"),
    ]
    for label, batch_a, batch_b, p, unit in scenarios:
        arms = simulate(rng, experiments, 200, batch_a, batch_b, p, p)
        t_opt = CONFIG.tune_feedback if unit == "feedback" else CONFIG.tune_requests
        lower, upper = bounds(arms, t_opt)
        declared = (lower > 0) | (upper < 0)
        naive = np.abs(naive_z(arms)) > 1.959964
        enough = np.minimum(arms.n_a, arms.n_b) >= CONFIG.min_feedback_per_arm
        if unit == "feedback":
            rolled_back = enough & (upper < -CONFIG.margin)
        else:
            rolled_back = enough & (lower > CONFIG.error_tolerance)
        lines.append(f"{label:<62}{share(declared):<28}{share(naive):<28}{share(rolled_back)}")
    arms = simulate(np.random.default_rng(0), 1, 1, 500, 500, 0.9, 0.9)
    check = naive_z(arms)[0, 0]
    reference = proportions_ztest([arms.hits_b[0, 0], arms.hits_a[0, 0]], [500, 500])[0]
    assert np.isclose(check, reference), (check, reference)  # the contrast is statsmodels' z-test
    return lines


def first_look(flags: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Index of the first True look per experiment (nan where never)."""
    hit = flags.any(axis=1)
    return np.where(hit, flags.argmax(axis=1), np.nan)


def minutes(rows: float, per_second_at_full: float, weight: float) -> float:
    return rows / (per_second_at_full * weight) / 60


def power_row(label: str, rows: NDArray[np.float64], per_second: float, weight: float, unit: str) -> str:
    found = rows[~np.isnan(rows)]
    if len(found) < len(rows) / 2:
        return f"{label:<52}{'not within the horizon':>24}"
    never = np.where(np.isnan(rows), np.inf, rows)  # not caught within the horizon: later than any
    median = float(np.quantile(never, 0.5, method="inverted_cdf"))
    p90 = float(np.quantile(never, 0.9, method="inverted_cdf"))
    return (
        f"{label:<52}{median:>8,.0f} {p90:>8,.0f} {unit:<9}{minutes(median, per_second, weight):>7.1f} "
        f"{minutes(p90, per_second, weight):>7.1f} min at {weight:.0%}  (caught {len(found) / len(rows):.1%})"
    )


def power(rng: np.random.Generator, experiments: int) -> list[str]:
    feedback_rate = RATE * FEEDBACK_SHARE
    lines = [
        "",
        f"(b) power: challenger-arm samples until roll back, {experiments} simulations each "
        f"(demo traffic: {RATE:g} requests/s, feedback on {FEEDBACK_SHARE:.0%}: {feedback_rate:g} rows/s)",
        f"{'scenario':<52}{'median':>8} {'p90':>8} {'':<9}{'median':>7} {'p90':>7}",
    ]
    for weight in (0.1, 0.5):
        batch_b = 10 if weight == 0.1 else 50
        batch_a = round(batch_b * (1 - weight) / weight)
        arms = simulate(rng, experiments, 400, batch_a, batch_b, 0.90, 0.85)
        _, upper = bounds(arms, CONFIG.tune_feedback)
        enough = np.minimum(arms.n_a, arms.n_b) >= CONFIG.min_feedback_per_arm
        rows = (first_look(enough & (upper < -CONFIG.margin)) + 1) * batch_b
        lines.append(
            power_row("accuracy 85 % vs 90 % (5 points worse)", rows, feedback_rate, weight, "feedback")
        )
    for weight in (0.1, 0.5):
        batch_b = 10 if weight == 0.1 else 50
        batch_a = round(batch_b * (1 - weight) / weight)
        arms = simulate(rng, experiments, 400, batch_a, batch_b, 0.001, 0.05)
        lower, _ = bounds(arms, CONFIG.tune_requests)
        enough = np.minimum(arms.n_a, arms.n_b) >= CONFIG.min_requests_per_arm
        rows = (first_look(enough & (lower > CONFIG.error_tolerance)) + 1) * batch_b
        lines.append(power_row("errors 5 % vs 0.1 % of requests", rows, RATE, weight, "requests"))
    lines.append(
        power_row("p99 latency 2x the champion's (lognormal)", latency_power(rng, 300), RATE, 0.5, "requests")
    )
    effect = proportion_effectsize(0.90 - CONFIG.margin, 0.85)  # "worse than the margin": 88 % vs 85 %
    fixed = NormalIndPower().solve_power(effect, alpha=CONFIG.alpha, power=0.9)
    lines.append(
        f"for contrast, one fixed-sample z-test of 85 % against the margin (88 %), alpha {CONFIG.alpha}, "
        f"power 90 % (statsmodels NormalIndPower): {fixed:,.0f} rows per arm at 50/50, looked at once"
    )
    return lines


def latency_power(
    rng: np.random.Generator, experiments: int, batch: int = 50, looks: int = 100
) -> NDArray[np.float64]:
    """Challenger p99 twice the champion's (tolerance 1.5x); both arms get ``batch`` requests per look."""
    q, alpha, t_opt = CONFIG.latency_quantile, CONFIG.alpha / 2, CONFIG.tune_requests / 2
    found = np.full(experiments, np.nan)
    for i in range(experiments):
        champion = 10 * rng.lognormal(0.0, 0.5, size=batch * looks)
        challenger = 2 * 10 * rng.lognormal(0.0, 0.5, size=batch * looks)
        for look in range(CONFIG.min_requests_per_arm // batch, looks + 1):
            n = look * batch
            ours = quantile_interval(challenger[:n], q, alpha, t_opt)
            theirs = quantile_interval(champion[:n], q, alpha, t_opt)
            allowed = max(CONFIG.latency_ratio * theirs.upper, theirs.upper + CONFIG.latency_slack_ms)
            if ours.lower > allowed:
                found[i] = n
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    print("\n".join(validity(rng, args.experiments)))
    print("\n".join(power(rng, args.experiments)))
    print(f"\n{time.perf_counter() - started:.1f} s, seed {args.seed}")


if __name__ == "__main__":
    main()
