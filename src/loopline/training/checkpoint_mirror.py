"""Trial folders mirrored to shared storage, so that a trial retried on another machine resumes.

On a cluster every trial runs in a pod whose disk dies with it (``LOOPLINE_HOME`` is ``/tmp/loopline`` in
the training image); a pod killed mid-trial is retried by another worker of the same Optuna study, from the
dead trial's folder. That folder must be where every pod can read it: each checkpoint (``last.pt``) and the
trial's best weights are copied, as they are written, to ``<root>/<study name>/<trial folder>/`` on the
data store (S3), and a folder missing locally is fetched from there before a trial resumes and before the
best trial is read back.

The root is ``TrainRequest.checkpoint_root``, by default ``<data root>/checkpoints`` when the data root is
remote (``s3://``); with a local data root nothing is mirrored (one machine, or a shared volume mounted as
``LOOPLINE_HOME``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from loopline.data.store import DataStore, open_store
from loopline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointMirror:
    """The copy of a study's trial folders under ``prefix`` of ``store``."""

    store: DataStore
    prefix: str  # the Optuna study's name

    def _key(self, folder: Path, name: str) -> str:
        return f"{self.prefix}/{folder.name}/{name}"

    def push(self, folder: Path) -> list[str]:
        """Copy every file of ``folder`` (not temporary ones) to the store; returns their keys."""
        keys = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_file() and not path.name.startswith("."):
                key = self._key(folder, path.name)
                self.store.put_bytes(key, path.read_bytes())
                keys.append(key)
        return keys

    def pull(self, folder: Path) -> list[str]:
        """Fetch the files of ``folder`` it lacks from the store (a trial another machine started);
        returns their names."""
        fetched = []
        for key in self.store.list_keys(f"{self.prefix}/{folder.name}"):
            target = folder / key.rpartition("/")[2]
            if target.exists():
                continue
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{target.name}.{os.getpid()}.tmp"
            tmp.write_bytes(self.store.get_bytes(key))
            os.replace(tmp, target)
            fetched.append(target.name)
        if fetched:
            log.info("fetched %s of %s from %s", ", ".join(fetched), folder.name, self.store.uri(self.prefix))
        return fetched


def default_checkpoint_root(settings: Settings) -> str | None:
    """``<data root>/checkpoints`` when the data root is remote (S3), else None (nothing to mirror)."""
    root = settings.resolved_data_root
    return f"{root}/checkpoints" if root.startswith("s3://") else None


def open_mirror(root: str | None, study_name: str, settings: Settings) -> CheckpointMirror | None:
    """The mirror of one study's trial folders under ``root`` (None: no mirror)."""
    if not root:
        return None
    return CheckpointMirror(open_store(root, settings), study_name)
