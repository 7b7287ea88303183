"""What ``loopline gc`` could remove, listed where it lives: result files, stored images, Label Studio
exports, local model servers' PID files and logs, and the model files servers cached."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from loopline.data.store import DataStore
from loopline.labeling.studio import LabelStudio
from loopline.retention.plan import ExportSnapshot, Item, Kind, ServerFiles
from loopline.services import process
from loopline.services.process import ProcessSpec
from loopline.settings import Settings

SERVER_PREFIX = "serve-"  # loopline.deploy.local names its model servers serve-<role>[-candidate]


def _file_item(kind: Kind, path: Path) -> Item | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return Item(kind, str(path), stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


def result_dirs(settings: Settings) -> list[Path]:
    """Where Prefect persists results on this machine: the local result-storage block's folder (saved by
    blocks/register.py under LOOPLINE_HOME/results) and Prefect's local storage path."""
    home = settings.resolved_home
    default = os.environ.get("PREFECT_LOCAL_STORAGE_PATH") or str(home / "prefect" / "storage")
    return [home / "results", Path(default).expanduser().resolve()]


def result_files(folders: Iterable[Path]) -> list[Item]:
    items = []
    for folder in dict.fromkeys(folders):
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and (item := _file_item("results", path)):
                    items.append(item)
    return items


def blobs(store: DataStore) -> list[Item]:
    """Stored images (``images/<hh>/<sha256>.<ext>``); a write in progress (a dot file) is not one."""
    return [
        Item("blobs", o.key, o.size, o.modified)
        for o in store.list_objects("images")
        if not o.key.rsplit("/", 1)[-1].startswith(".")
    ]


def label_studio_exports(studio: LabelStudio) -> list[ExportSnapshot]:
    """Every export of every project; the size of each completed one from its download's length."""
    snapshots = []
    page = 1
    while True:
        body = studio.request("GET", "/api/projects", params={"page": page, "page_size": 100})
        for project in body.get("results", []):
            pid = int(project["id"])
            for e in studio.exports(pid):
                done = e.get("status") == "completed"
                size = studio.export_size(pid, int(e["id"])) if done else 0
                snapshots.append(ExportSnapshot(pid, int(e["id"]), str(e.get("title") or ""), size))
        if not body.get("next"):
            return snapshots
        page += 1


def server_spec(home: Path, name: str) -> ProcessSpec:
    return ProcessSpec(name, ["loopline"], home, "", lambda: False)


def model_servers(home: Path) -> tuple[list[ServerFiles], frozenset[str]]:
    """Each local model server with a PID file or a log, and the models the running ones serve."""
    names = {p.stem for p in (home / "run").glob(f"{SERVER_PREFIX}*.pid")}
    names |= {p.stem for p in (home / "logs").glob(f"{SERVER_PREFIX}*.log")}
    servers, served = [], set()
    for name in sorted(names):
        spec = server_spec(home, name)
        pid = process.running_pid(spec)
        if pid is not None:
            served.add(_served_model(pid))
        pid_file, log = _file_item("servers", spec.pid_file), _file_item("servers", spec.log_file)
        servers.append(ServerFiles(name, pid is not None, pid_file, log))
    return servers, frozenset(served - {""})


def _served_model(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    return args[args.index("--model") + 1] if "--model" in args[:-1] else ""


def model_cache(home: Path) -> list[Item]:
    """``cache/models/NAME/VERSION`` folders (a download in progress, a dot folder, is not one)."""
    root = home / "cache" / "models"
    items = []
    for folder in sorted(root.glob("*/*")):
        if folder.is_dir() and not folder.name.startswith("."):
            files = [p for p in folder.rglob("*") if p.is_file()]
            modified = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
            items.append(Item("model-cache", str(folder), sum(p.stat().st_size for p in files), modified))
    return items
