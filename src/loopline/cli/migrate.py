"""Commands that move a loopline installation's work elsewhere: export and import (``loopline.migrate``)."""

from __future__ import annotations

from pathlib import Path

import typer

from loopline.cli import app, fail
from loopline.errors import LooplineError
from loopline.settings import get_settings


@app.command("export")
def export_command(
    bundle: Path = typer.Argument(..., help="A new or empty folder to write the bundle into."),
    models: list[str] = typer.Option(
        ["loopline-classifier"], "--model", help="A registered model to export (repeat for several)."
    ),
    no_models: bool = typer.Option(False, "--no-models", help="Export the data only."),
) -> None:
    """Write this configuration's data (dataset and labeled manifests and their images, from
    LOOPLINE_DATA_ROOT) and registered models (every version's files, tags, aliases and deployment history,
    from LOOPLINE_MLFLOW_TRACKING_URI) into a bundle folder, with the SHA-256 of every file in bundle.json."""
    from loopline.migrate.export import export_bundle

    try:
        result = export_bundle(get_settings(), bundle, [] if no_models else models)
    except (LooplineError, OSError) as exc:
        fail(exc)
    typer.echo(
        f"exported {result.datasets} dataset manifests, {result.labeled} labeled manifests, {result.images} "
        f"images and {sum(result.models.values())} model versions "
        f"({', '.join(f'{n}: {v}' for n, v in result.models.items()) or 'no models'}): {result.files} files, "
        f"{result.size / 1e6:.1f} MB"
    )
    typer.echo(f"index: {result.index_path}")
    typer.echo(f"next: copy {bundle} to where the team's settings are, then `loopline import {bundle}`")


@app.command("import")
def import_command(
    bundle: Path = typer.Argument(..., help="A folder `loopline export` wrote."),
) -> None:
    """Check every file of a bundle against its SHA-256, then copy its data into LOOPLINE_DATA_ROOT and
    register its models in LOOPLINE_MLFLOW_TRACKING_URI with their tags, aliases and deployment history
    (version numbers mapped to the target's). Running it again creates nothing new."""
    from loopline.migrate.importer import import_bundle

    try:
        result = import_bundle(get_settings(), bundle)
    except (LooplineError, OSError) as exc:
        fail(exc)
    data = result.data
    typer.echo(
        f"data root {result.data_root}: {data.images_written} images written, {data.images_skipped} already "
        f"there; {data.manifests_written} manifests written, {data.manifests_skipped} already there"
    )
    for model in result.models:
        mapped = ", ".join(f"v{s} -> v{t}" for s, t in model.versions.items())
        aliases = ", ".join(f"{a} -> v{v}" for a, v in model.aliases.items()) or "unchanged"
        typer.echo(
            f"model {model.name} on {result.tracking_uri}: {len(model.created)} versions registered "
            f"({mapped}); aliases {aliases}; {model.tags_set} tags set"
        )
