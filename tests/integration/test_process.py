"""Managed processes: idempotent start, busy ports, failed starts with log tails, stopping only ours."""

import socket
import sys
from pathlib import Path

import httpx
import pytest

from loopline.errors import ServiceError
from loopline.services import process
from loopline.services.process import ProcessSpec, free_port

pytestmark = pytest.mark.integration


def http_server(tmp_path: Path, port: int, command: list[str] | None = None) -> ProcessSpec:
    url = f"http://127.0.0.1:{port}"
    return ProcessSpec(
        name="web",
        command=command or [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        state_dir=tmp_path,
        url=url,
        health=lambda: httpx.get(url, timeout=1).status_code == 200,
        port=port,
        start_timeout=20,
    )


def test_start_is_idempotent_and_stop_ends_it(tmp_path: Path) -> None:
    spec = http_server(tmp_path, free_port())
    pid = process.start(spec)
    try:
        assert process.start(spec) == pid
        assert process.healthy(spec)
    finally:
        assert process.stop(spec)
    assert process.running_pid(spec) is None
    assert not process.stop(spec)  # nothing of ours is running any more


def test_a_busy_port_is_refused_with_the_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} .* already in use"):
            process.start(http_server(tmp_path, port))


def test_a_failed_start_shows_the_log(tmp_path: Path) -> None:
    spec = http_server(tmp_path, free_port(), [sys.executable, "-c", "raise SystemExit('boom: bad config')"])
    with pytest.raises(ServiceError, match="boom: bad config"):
        process.start(spec)
    assert not spec.pid_file.exists()


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    spec = http_server(tmp_path, free_port())
    spec.pid_file.parent.mkdir(parents=True)
    spec.pid_file.write_text("1\nnot-our-server-xyz\n")  # PID 1 is alive but is not our server
    assert process.running_pid(spec) is None


def test_stop_ends_what_the_service_started_in_sessions_of_its_own(tmp_path: Path) -> None:
    """A Prefect worker starts each flow run in a session of its own: out of the service's process group,
    so stopping the group alone would leave a training run going."""
    port, child_pid = free_port(), tmp_path / "child.pid"
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '600'], start_new_session=True)\n"
        f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
        f"sys.argv = ['http.server', '{port}', '--bind', '127.0.0.1']\n"
        "import runpy; runpy.run_module('http.server', run_name='__main__')\n"
    )
    spec = http_server(tmp_path, port, [sys.executable, "-c", script])
    process.start(spec)
    child = int(child_pid.read_text())
    assert running(child)
    assert process.stop(spec, grace=2)
    assert not running(child)


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for a reaper that never comes in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
