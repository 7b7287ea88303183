"""Start the model server: resolve and load the selected version first (a wrong name, alias or broken model
fails here, with its message, before anything listens), then serve it with uvicorn.

One worker (the default): one process, one event loop. ``workers`` > 1 (``LOOPLINE_SERVING_WORKERS``): this
process binds the port and starts that many worker processes that accept on it, each with its own copy of
the model (ONNX Runtime threads: ``default_threads(workers)``), and waits for them. On a small host the
event loop, not the model, bounds throughput (Python runs one core's worth per process): on two shared cores
two workers answered 1.1-2.0x the requests/s of one at concurrency 32. What holds across workers:

- TCP_NODELAY: the shared listening socket is created with ``IPPROTO_TCP``, so asyncio sets TCP_NODELAY on
  every accepted connection and keep-alive requests never wait ~40 ms for the client's delayed ACK (the
  trap of ``uvicorn --workers N``, whose socket has protocol 0; see ENVIRONMENT.md);
- hot reload: ``POST /admin/reload`` reloads the worker that answers it, which then signals this process
  (SIGUSR1); this process forwards the signal to every worker, and each follows the selector (the one that
  already reloaded answers ``unchanged``). ``kill -USR1 <this process>`` reloads them all too. Each worker
  polls the alias on its own;
- ``/metrics``: prometheus-client's multiprocess mode (a fresh ``PROMETHEUS_MULTIPROC_DIR`` for the
  workers' value files), so any worker's ``/metrics`` counts the requests of all of them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.errors import ServiceError
from loopline.serving.live import RegistryLoader
from loopline.serving.model import default_threads
from loopline.serving.settings import ServingSettings

if TYPE_CHECKING:
    from loopline.serving.live import ServedModel

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve_model(settings: ServingSettings, tracking_uri: str, cache_dir: Path) -> None:
    """Serve ``settings.model_name`` at ``settings.selector`` from the MLflow server at ``tracking_uri``
    on ``settings.host:settings.port`` until interrupted (model files cached under ``cache_dir``).

    Raises:
        ModelNotFound: the model, alias or version does not exist.
        ModelLoadError: the version's files are missing, corrupt, or fail the smoke check.
        ServiceError: (several workers) the port is taken.
    """
    threads = settings.threads or default_threads(settings.workers)
    loader = RegistryLoader(tracking_uri, settings.model_name, settings.selector, cache_dir, threads)
    model = loader.load(loader.resolve())
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logger.info(
        "serving %s version %s (%s) from %s with %d worker(s)",
        model.name,
        model.version,
        settings.selector,
        tracking_uri,
        settings.workers,
    )
    if settings.workers == 1:
        _serve(settings, loader, model, sockets=None)
        return
    del model  # each worker loads its own copy (from the cache) after it starts
    _supervise(settings, loader)


def _serve(
    settings: ServingSettings,
    loader: RegistryLoader,
    model: ServedModel,
    sockets: list[socket.socket] | None,
    on_reloaded: Callable[[], None] | None = None,
) -> None:
    import uvicorn

    from loopline.serving.app import create_app

    app = create_app(settings, loader, initial=model, on_reloaded=on_reloaded)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    host = app.state.host

    def reload_on_signal(signum: int, frame: object) -> None:  # runs on the event loop's thread
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet: the version just loaded is current
            return
        loop.call_soon_threadsafe(lambda: loop.create_task(host.try_reload()))

    signal.signal(signal.SIGUSR1, reload_on_signal)
    freeze_startup_heap()
    server.run(sockets=sockets)


def freeze_startup_heap() -> None:
    """Move what is alive now (the imported libraries, the model) out of the garbage collector's sight:
    a full collection scanned ~170,000 such objects in ~90 ms (2 shared cores), a pause requests waited
    out."""
    gc.collect()
    gc.freeze()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP listening socket on ``host:port`` created with ``IPPROTO_TCP``: asyncio then sets TCP_NODELAY
    on each connection it accepts (it checks the socket's protocol).

    Raises:
        ServiceError: the port is taken (or the address is not this host's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"The model server cannot listen on {host}:{port} ({exc.strerror or exc}). To fix this, stop "
            "what uses the port or serve on another one (--port)."
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _supervise(settings: ServingSettings, loader: RegistryLoader) -> None:
    """Run ``settings.workers`` worker processes on one listening socket until a signal or a worker ends."""
    sock = listening_socket(settings.host, settings.port)
    metrics_dir = tempfile.mkdtemp(prefix="loopline-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # read by prometheus-client as workers import it
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, loader, sock, os.getpid()), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits

    def forward_reload(signum: int, frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGUSR1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, forward_reload)
    try:
        for worker in workers:
            worker.start()
        logger.info("workers %s listen on %s:%d", [w.pid for w in workers], settings.host, settings.port)
        wait([w.sentinel for w in workers])  # the first to end (a signal ends them all)
        if not stopping:
            ended = next(w for w in workers if not w.is_alive())
            logger.error("worker %s exited with %s; stopping the others", ended.pid, ended.exitcode)
        stop(signal.SIGTERM, None)
        for worker in workers:
            worker.join(timeout=15)
            if worker.is_alive():
                worker.kill()
                worker.join()
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if not stopping:
        raise SystemExit(1)


def _worker(settings: ServingSettings, loader: RegistryLoader, sock: socket.socket, parent: int) -> None:
    """One worker process: load the model (from the cache the parent filled), serve on ``sock``."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the server's own handler is installed
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    model = loader.load(loader.resolve())

    def tell_parent() -> None:  # a reload over HTTP: the parent has every worker follow it
        os.kill(parent, signal.SIGUSR1)

    _serve(settings, loader, model, sockets=[sock], on_reloaded=tell_parent)
