"""Spawned worker processes that start lean: they do not re-import the parent's ``__main__``.

``multiprocessing``'s spawn start method runs the parent's main module again in every child (as
``__mp_main__``) so that functions defined there can be unpickled. loopline's workers only run functions
from ``loopline`` modules, which the child imports by name; re-running the main module is pure cost, and a
large one under orchestration: a Prefect deployment's main module is ``prefect.engine`` and
``python -m flows.collect`` imports Prefect too (about 1.2 s of CPU per child on our machines, paid by
every child at once). ``lean_spawn_context()`` gives a spawn context whose processes are launched with
the main module hidden, so a child imports only what the pickled work needs.

Spawn (not fork) stays: forking a process that runs Prefect's threads can copy a held lock.
"""

from __future__ import annotations

import sys
import threading
import types
from multiprocessing import context
from typing import Any

_MAIN_SWAP = threading.Lock()


class _LeanSpawnProcess(context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        from multiprocessing.popen_spawn_posix import Popen

        # The launch reads sys.modules["__main__"] to tell the child what to re-import; show it a bare
        # module (no __spec__, no __file__) for the few milliseconds of the launch.
        with _MAIN_SWAP:
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                return Popen(process_obj)
            finally:
                sys.modules["__main__"] = main


class _LeanSpawnContext(context.SpawnContext):
    Process = _LeanSpawnProcess


def lean_spawn_context() -> context.SpawnContext:
    """A spawn context whose children do not re-import the parent's ``__main__`` (POSIX)."""
    if sys.platform == "win32":  # pragma: no cover - loopline runs on Linux and macOS
        return context.SpawnContext()
    return _LeanSpawnContext()
