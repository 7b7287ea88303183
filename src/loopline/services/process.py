"""Managed background processes: PID files, health checks, log tails, polite stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loopline.errors import ServiceError

HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one long-lived process of the local platform."""

    name: str
    command: Sequence[str]
    state_dir: Path
    url: str
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    start_timeout: float = 120.0
    # Signals sent in turn until the process exits (a Prefect worker needs TERM then INT).
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    # Run before the process is started (not when it already runs), e.g. to seed its state.
    prepare: Callable[[], None] | None = None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def running_pid(spec: ProcessSpec) -> int | None:
    """The PID recorded for this service if that process still runs and is the one we started."""
    try:
        pid_text, _, marker = spec.pid_file.read_text().partition("\n")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    with contextlib.suppress(OSError):  # guard against a recycled PID
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if marker.strip() and marker.strip() not in cmdline:
            return None
    return pid


def healthy(spec: ProcessSpec) -> bool:
    try:
        return spec.health()
    except Exception:
        return False


def launch(spec: ProcessSpec) -> tuple[int, bool]:
    """Start the process unless it already runs, without waiting. Returns ``(pid, started_now)``."""
    pid = running_pid(spec)
    if pid is not None:
        return pid, False
    if spec.port is not None and port_in_use(spec.host, spec.port):
        raise ServiceError(
            f"{spec.name}: port {spec.port} on {spec.host} is already in use by another program. To fix "
            f"this, stop that program or choose another port (LOOPLINE_{_port_setting(spec.name)}=…)."
        )
    spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    if spec.prepare is not None:
        spec.prepare()
    env = {**os.environ, **spec.env}
    with spec.log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(spec.command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(spec.command),
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    spec.pid_file.write_text(f"{process.pid}\n{Path(spec.command[0]).name}\n")
    return process.pid, True


def start(spec: ProcessSpec) -> int:
    """Start the process unless it already runs; wait until healthy (stop it if it never is)."""
    pid, started_now = launch(spec)
    try:
        wait_healthy(spec, pid)
    except ServiceError:
        if started_now:
            stop(spec)
        raise
    return pid


def wait_healthy(spec: ProcessSpec, pid: int) -> None:
    deadline = time.monotonic() + spec.start_timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise ServiceError(
                f"{spec.name} exited while starting. "
                f"Last lines of {spec.log_file}:\n{log_tail(spec.log_file)}"
            )
        if healthy(spec):
            return
        time.sleep(0.5)
    raise ServiceError(
        f"{spec.name} did not become healthy at {spec.url} within {spec.start_timeout:.0f} s. "
        f"Last lines of {spec.log_file}:\n{log_tail(spec.log_file)}"
    )


def stop(spec: ProcessSpec, grace: float = 10.0) -> bool:
    """Stop the process group this service started (only ours: by PID file), and the processes it started
    in sessions of their own (a Prefect worker's flow runs). True if one was stopped."""
    pid = running_pid(spec)
    stopped = False
    if pid is not None:
        strays = descendants(pid)  # read first: once the service is gone, its children have a new parent
        for sig in (*spec.stop_signals, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + (grace if sig != signal.SIGKILL else 5)
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if not _alive(pid):
                break
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        _stop_strays(strays, grace)
        stopped = True
    spec.pid_file.unlink(missing_ok=True)
    return stopped


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the process's name: state, ppid, ... (starttime at index 19);
    None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` (children, their children, ...) as ``{pid: start time}``, read from
    /proc (empty where there is none). The start time tells a process from a later one with its PID."""
    parents: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields is None:
            continue  # gone meanwhile
        child = int(entry.name)
        parents.setdefault(int(fields[1]), []).append(child)
        started[child] = int(fields[19])  # in clock ticks since boot
    found: dict[int, int] = {}
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        if child not in found:
            found[child] = started[child]
            todo.extend(parents.get(child, []))
    return found


def _stop_strays(strays: dict[int, int], grace: float) -> None:
    """TERM, then KILL after ``grace`` seconds, each process of ``strays`` that still runs as itself (same
    start time, not a zombie)."""

    def still_ours() -> list[int]:
        return [
            stray
            for stray, started in strays.items()
            if (fields := _stat(stray)) is not None and int(fields[19]) == started and fields[0] != "Z"
        ]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for stray in still_ours():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stray, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline and still_ours():
            time.sleep(0.2)


def _port_setting(name: str) -> str:
    return {
        "prefect-server": "PREFECT_PORT",
        "mlflow": "MLFLOW_PORT",
        "label-studio": "LABEL_STUDIO_PORT",
    }.get(name, "PORT")
