"""One HPO worker process for the shared-study test: ``python -m tests.integration.hpo_worker STORAGE
DATA_FOLDER WORKDIR OUT_JSON`` runs the study on the digits and writes what it saw."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path


def main(storage: str, data: Path, workdir: Path, out: Path) -> None:
    import torch

    from loopline.data.demo import labeled_digit_rows
    from loopline.data.store import LocalStore
    from loopline.training.data import check_labeled_rows, loader_factory
    from loopline.training.hpo import Heartbeat, run_study
    from loopline.training.search import FloatRange, SearchSpace

    torch.set_num_threads(1)
    rows = labeled_digit_rows(LocalStore(data), 200)
    mapping = check_labeled_rows(rows)

    loaders = loader_factory(rows, mapping)

    result = run_study(
        loaders=loaders,
        mapping=mapping,
        space=SearchSpace(lr=FloatRange(low=1e-3, high=1e-2), batch_sizes=[32], optimizers=["adamw"]),
        epochs=2,
        n_trials=4,
        storage=storage,
        study_name="shared",
        workdir=workdir,
        pruner="none",
        log_to_mlflow=False,
        heartbeat=Heartbeat(interval=2, grace=10),
    )
    out.write_text(json.dumps({"best": result.best_number, "trials": [asdict(t) for t in result.trials]}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
