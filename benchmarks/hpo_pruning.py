"""HPO with pruning against without: epochs of compute to get within 0.5 accuracy points of the best.

Both studies use the same data (the digits, labels from the dataset, 15% val), TPE sampler and seed, the
same search space and number of trials; one prunes (median, per-epoch validation accuracy), the other
does not. For each, trials are replayed in order and epochs summed until the running best reaches the
overall best minus 0.5 points. Prints both and the ratio (target <= 0.5).
The i-th trial of either study samples with seed ``seed + i`` (loopline.training.hpo), so during TPE's
random start-up both studies ask the same questions and differ only in what pruning stops; the search
space is the realistic wide one (lr over three decades, AdamW or SGD), where many trials are poor.
Run: .venv/bin/python benchmarks/hpo_pruning.py [--trials 20] [--epochs 10] [--images 600]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from loopline.data.demo import labeled_digit_rows
from loopline.data.labeled import LabeledRow
from loopline.data.store import LocalStore
from loopline.training.data import check_labeled_rows, loader_factory
from loopline.training.hpo import Pruner, StudyResult, run_study
from loopline.training.search import FloatRange, SearchSpace


def digit_rows(folder: Path, n: int) -> list[LabeledRow]:
    return labeled_digit_rows(LocalStore(folder), n)


def study(rows: list[LabeledRow], pruner: Pruner, args: argparse.Namespace, tmp: Path) -> StudyResult:
    mapping = check_labeled_rows(rows)
    loaders = loader_factory(rows, mapping)

    space = SearchSpace(
        lr=FloatRange(low=1e-5, high=1e-1, log=True), batch_sizes=[32, 64], optimizers=["adamw", "sgd"]
    )
    return run_study(
        loaders=loaders,
        mapping=mapping,
        space=space,
        epochs=args.epochs,
        n_trials=args.trials,
        storage=f"sqlite:///{tmp / f'{pruner}.db'}",
        study_name=f"bench-{pruner}",
        workdir=tmp / pruner,
        pruner=pruner,
        seed=args.seed,
        log_to_mlflow=False,
    )


def epochs_to_reach(result: StudyResult, target: float) -> int | None:
    spent, best = 0, float("-inf")
    for trial in sorted(result.trials, key=lambda t: t.number):
        spent += trial.epochs
        if trial.value is not None and trial.state == "complete":
            best = max(best, trial.value)
        if best >= target:
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "images").mkdir()
        rows = digit_rows(tmp / "images", args.images)
        results = {p: study(rows, p, args, tmp) for p in ("median", "hyperband", "none")}
    best = max(r.best_value for r in results.values())
    target = best - 0.005
    print(f"{args.trials} trials x up to {args.epochs} epochs, {args.images} images; best val {best:.4f}")
    spent = {}
    for pruner, result in results.items():
        total = sum(t.epochs for t in result.trials)
        pruned = sum(t.state == "pruned" for t in result.trials)
        spent[pruner] = epochs_to_reach(result, target)
        print(
            f"pruner={pruner:<6} best {result.best_value:.4f}  epochs run {total:3d} ({pruned} pruned)  "
            f"epochs to within 0.5 pt of {best:.4f}: {spent[pruner]}"
        )
    for pruner in ("median", "hyperband"):
        if spent[pruner] and spent["none"]:
            ratio = spent[pruner] / spent["none"]
            print(f"ratio {pruner} / none, epochs to target: {ratio:.2f} (target <= 0.5)")
        else:
            print(f"{pruner}: a study never came within 0.5 points of the best: no ratio (run more trials)")


if __name__ == "__main__":
    main()
