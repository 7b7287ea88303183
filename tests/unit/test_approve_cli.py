"""`loopline approve` names what went wrong with the Prefect API instead of printing a traceback."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from typer.testing import CliRunner

from loopline.cli import app
from loopline.services.process import free_port

pytestmark = pytest.mark.unit


class NotPrefect(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"no such route")

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def wrong_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), NotPrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()


@pytest.mark.parametrize("args", [["approve", "--list"], ["approve", "run-1"]])
def test_no_server_is_named(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "not reachable" in result.output and "services up" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["approve", "--list"], ["approve", "run-1"]])
def test_a_server_that_is_not_prefect_is_named(
    args: list[str], wrong_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_PREFECT_API_URL", wrong_server)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and ("404" in result.output or "no flow run" in result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
