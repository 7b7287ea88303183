"""Run the train-model flow in this process (as `python flows/train.py` would) and write its result:
``python -m tests.integration.train_runner LABELS_JSON PARAMS_JSON OUT_JSON``. The crash test kills it."""

from __future__ import annotations

import sys
from pathlib import Path


def main(labels: str, params: str, out: Path) -> None:
    from flows.train import train_flow
    from tasks.label import LabeledDatasetRef
    from tasks.train import TrainParameters

    ref, train = LabeledDatasetRef.model_validate_json(labels), TrainParameters.model_validate_json(params)
    result = train_flow(ref, train)
    out.write_text(result.model_dump_json())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
