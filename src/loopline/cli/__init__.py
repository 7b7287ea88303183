"""The ``loopline`` command: the local platform, data, the loop's state, serving and deployment. The
commands live in ``platform`` (services, deployments, demo data, datasets, reviews, retention),
``loop`` (status, lineage), ``serving`` (model servers, the A/B router, images, manifests, rollbacks) and
``migrate`` (export and import of a bundle)."""

from __future__ import annotations

from typing import NoReturn

import typer

app = typer.Typer(help="loopline: the production line for the machine-learning loop.", no_args_is_help=True)
services_app = typer.Typer(help="The local platform on 127.0.0.1 (Prefect, worker, MLflow, Label Studio).")
app.add_typer(services_app, name="services")


def fail(exc: Exception) -> NoReturn:
    """Print the error (it names the problem and the fix) and exit 1."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


from loopline.cli import loop, migrate, platform, serving  # noqa: E402  (register their commands on ``app``)

__all__ = ["app", "fail", "loop", "migrate", "platform", "serving"]
