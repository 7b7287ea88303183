"""Active learning against random selection: labels needed to reach the same test accuracy on the digits.

Strategy under test (fixed up front): ``margin`` uncertainty x ``kcenter`` diversity, i.e. loopline's
``select_batch(uncertainty="margin", diversity="kcenter")`` with its default candidate_factor of 5: the
5 x batch least-confident-by-margin pool images, spread by k-center greedy from the already-labeled
embeddings. Baseline: ``select_batch(uncertainty="random")`` (a seeded uniform sample of the pool).
Two other combinations (margin+none, entropy+kcenter) are printed for context only; the headline
ratio is margin+kcenter vs random and nothing else.

Data: sklearn ``load_digits()`` (1,797 8x8 images). A fixed stratified 30% test set (split seed 0); the
other 70% is the unlabeled pool. Per seed, both arms start from the same ``--initial`` random labeled
images, then repeat: fit the model on the labeled set, score the remaining pool, pick ``--batch``, add
them, until ``--cap`` labels. Test accuracy is recorded after every fit (at 20, 40, ..., cap labels).

Model: scikit-learn LogisticRegression (lbfgs, C=1, max_iter=2000) on the 64 pixels scaled to [0, 1];
the diversity embeddings are those same pixels. NOT the project's small_cnn: on this CPU one small_cnn
fit (200 images, 30 epochs, 1 thread) took ~16 s, and a default run needs ~120 fits (~30 min), over the
time budget. The selection code is loopline's own (``loopline.labeling.active``).

Target accuracy (chosen up front): the random arm's test accuracy at the label cap, averaged over seeds.
"Labels needed" for one arm and seed = the first label count where its test accuracy >= target, linearly
interpolated between the two rounds around the crossing. A seed that never reaches the target within
the cap is counted as ``cap`` (a censored lower bound, marked ">=" in the per-seed table). Ratio =
mean(labels needed, margin+kcenter) / mean(labels needed, random); the requirement is ratio <= 0.7.

Run: .venv/bin/python benchmarks/active_learning.py [--seeds 5] [--batch 20] [--cap 400] [--initial 20]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from itertools import count
from typing import Any

import numpy as np
import torch

from loopline.labeling.active import Diversity, Uncertainty, select_batch

N_CLASSES = 10
TEST_FRACTION = 0.3
SPLIT_SEED = 0
HEADLINE: tuple[Uncertainty, Diversity] = ("margin", "kcenter")
CONTEXT: tuple[tuple[Uncertainty, Diversity], ...] = (("margin", "none"), ("entropy", "kcenter"))
RANDOM: tuple[Uncertainty, Diversity] = ("random", "none")


@dataclass(frozen=True)
class Data:
    pool_x: np.ndarray
    pool_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class Curve:
    labels: tuple[int, ...]  # labeled-set size at each fit
    accuracy: tuple[float, ...]  # test accuracy of that fit


def load_data() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    pool_x, test_x, pool_y, test_y = train_test_split(
        x, digits.target, test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return Data(pool_x, pool_y, test_x, test_y)


def fit(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000).fit(x, y)


def full_proba(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities as (n, 10), zero columns for classes absent from the labeled set."""
    proba = np.zeros((len(x), N_CLASSES))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def run_arm(
    data: Data,
    initial: np.ndarray,
    strategy: tuple[Uncertainty, Diversity],
    args: argparse.Namespace,
    seed: int,
) -> Curve:
    uncertainty, diversity = strategy
    labeled = list(initial)
    labels, accuracy = [], []
    for round_ in count():
        model = fit(data.pool_x[labeled], data.pool_y[labeled])
        labels.append(len(labeled))
        accuracy.append(float(np.mean(model.predict(data.test_x) == data.test_y)))
        if len(labeled) >= args.cap:
            break
        unlabeled = np.setdiff1d(np.arange(len(data.pool_y)), labeled)
        selection = select_batch(
            full_proba(model, data.pool_x[unlabeled]),
            data.pool_x[unlabeled],
            min(args.batch, args.cap - len(labeled)),
            uncertainty=uncertainty,
            diversity=diversity,
            labeled_embeddings=data.pool_x[labeled],
            seed=seed * 10_000 + round_,
        )
        labeled.extend(int(unlabeled[i]) for i in selection.indices)
        if len(set(labeled)) != len(labeled):  # a repeated pick would be counted as a new label
            raise RuntimeError(f"{name(strategy)} picked an image twice (seed {seed}, round {round_})")
    return Curve(tuple(labels), tuple(accuracy))


def labels_needed(curve: Curve, target: float) -> tuple[float, bool]:
    """First (interpolated) label count with accuracy >= target; (cap, False) if never reached."""
    for i, acc in enumerate(curve.accuracy):
        if acc >= target:
            if i == 0:
                return float(curve.labels[0]), True
            a0, a1 = curve.accuracy[i - 1], acc
            n0, n1 = curve.labels[i - 1], curve.labels[i]
            return n0 + (target - a0) / (a1 - a0) * (n1 - n0), True
    return float(curve.labels[-1]), False


def name(strategy: tuple[Uncertainty, Diversity]) -> str:
    return "random" if strategy[0] == "random" else f"{strategy[0]}+{strategy[1]}"


def print_curves(curves: dict[str, list[Curve]], step: int) -> None:
    names = list(curves)
    labels = curves[names[0]][0].labels
    print(f"\nMean test accuracy over seeds (every {step} labels):")
    print(f"  {'labels':>6}  " + "  ".join(f"{n:>16}" for n in names))
    for i, n_labels in enumerate(labels):
        if (n_labels - labels[0]) % step and i != len(labels) - 1:
            continue
        row = [np.mean([c.accuracy[i] for c in curves[n]]) for n in names]
        print(f"  {n_labels:>6}  " + "  ".join(f"{a:>16.4f}" for a in row))


def print_needed(curves: dict[str, list[Curve]], target: float, seeds: list[int]) -> dict[str, float]:
    print(f"\nLabels needed to reach target accuracy {target:.4f} (per seed; '>=' = not reached by cap):")
    print(f"  {'strategy':>16}  " + "  ".join(f"{'seed ' + str(s):>9}" for s in seeds) + f"  {'mean':>8}")
    means = {}
    for strategy, arm in curves.items():
        needed = [labels_needed(c, target) for c in arm]
        cells = [f"{'' if ok else '>='}{n:.1f}" for n, ok in needed]
        means[strategy] = float(np.mean([n for n, _ in needed]))
        print(f"  {strategy:>16}  " + "  ".join(f"{c:>9}" for c in cells) + f"  {means[strategy]:>8.1f}")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--cap", type=int, default=400)
    parser.add_argument("--initial", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    data = load_data()
    seeds = list(range(args.seeds))
    strategies = [RANDOM, HEADLINE, *CONTEXT]
    curves: dict[str, list[Curve]] = {name(s): [] for s in strategies}
    for seed in seeds:
        initial = np.random.default_rng(seed).choice(len(data.pool_y), size=args.initial, replace=False)
        for strategy in strategies:
            curves[name(strategy)].append(run_arm(data, initial, strategy, args, seed))

    print(
        f"Digits: pool {len(data.pool_y)}, test {len(data.test_y)} (stratified {TEST_FRACTION:.0%}); "
        f"seeds {args.seeds}, initial {args.initial}, batch {args.batch}, cap {args.cap}; "
        "model LogisticRegression on pixels"
    )
    print_curves(curves, step=max(args.batch, 40))
    target = float(np.mean([c.accuracy[-1] for c in curves["random"]]))
    print(f"\nTarget = random arm's mean test accuracy at the cap ({args.cap} labels) = {target:.4f}")
    means = print_needed(curves, target, seeds)

    headline = name(HEADLINE)
    ratio = means[headline] / means["random"]
    print("\nContext only (not the headline):")
    for strategy in CONTEXT:
        print(f"  {name(strategy)} / random = {means[name(strategy)] / means['random']:.3f}")
    print(
        f"\nHEADLINE: labels needed {headline} {means[headline]:.1f} / random {means['random']:.1f} "
        f"= ratio {ratio:.3f} (target <= 0.7: {'MET' if ratio <= 0.7 else 'NOT MET'})"
    )
    print(f"Wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
