"""Start the model server: resolve and load the selected version first (a wrong name, alias or broken model
fails here, with its message, before anything listens), then serve it with uvicorn.

One process, one event loop: asyncio sets TCP_NODELAY on every accepted connection, so keep-alive
requests never wait ~40 ms for the client's delayed ACK (the trap of ``uvicorn --workers N`` and of
servers handed a pre-bound socket, see ENVIRONMENT.md). Scale with replicas, not workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from loopline.serving.live import RegistryLoader
from loopline.serving.settings import ServingSettings

logger = logging.getLogger(__name__)


def serve_model(settings: ServingSettings, tracking_uri: str, cache_dir: Path) -> None:
    """Serve ``settings.model_name`` at ``settings.selector`` from the MLflow server at ``tracking_uri``
    on ``settings.host:settings.port`` until interrupted (model files cached under ``cache_dir``).

    Raises:
        ModelNotFound: the model, alias or version does not exist.
        ModelLoadError: the version's files are missing, corrupt, or fail the smoke check.
    """
    import uvicorn

    from loopline.serving.app import create_app

    loader = RegistryLoader(tracking_uri, settings.model_name, settings.selector, cache_dir, settings.threads)
    model = loader.load(loader.resolve())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.info(
        "serving %s version %s (%s) from %s", model.name, model.version, settings.selector, tracking_uri
    )
    app = create_app(settings, loader, initial=model)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,  # see the module docstring: one process keeps TCP_NODELAY
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
