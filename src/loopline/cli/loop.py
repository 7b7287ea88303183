"""Commands that show the loop's state: status and lineage."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from loopline.cli import app, fail
from loopline.cli.serving import TARGET_HELP
from loopline.errors import LooplineError
from loopline.settings import get_settings

if TYPE_CHECKING:
    pass


@app.command("lineage")
def lineage(
    what: str = typer.Argument(
        ..., help="A request id (X-Request-Id), MODEL@ALIAS, MODEL/VERSION or VERSION (of --model)."
    ),
    model: str = typer.Option("loopline-classifier", "--model", help="The model of a bare VERSION."),
    as_json: bool = typer.Option(False, "--json", help="The whole chain as JSON (every training image)."),
    images: int = typer.Option(10, "--images", help="Training images listed in the text."),
) -> None:
    """Which labels, and whose, trained the model answering a request: request → model version → training
    run and study → labeled manifest → Label Studio projects, annotators, agreement → dataset versions →
    images. Exits 1 when a link is broken (the chain so far is printed, with where and why)."""
    from loopline.lineage import parse_query, trace
    from loopline.lineage_readers import readers_from_settings
    from loopline.lineage_render import render_lineage

    try:
        found = trace(parse_query(what, model), readers_from_settings(get_settings()))
    except LooplineError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=1))
    else:
        for line in render_lineage(found, images):
            typer.echo(line)
    if not found.complete:
        raise typer.Exit(code=1)


@app.command("status")
def loop_status(
    model: str = typer.Option("loopline-classifier", "--model", help="Registered model."),
    target: str = typer.Option(None, "--target", help=TARGET_HELP),
) -> None:
    """The whole loop on one screen: platform health, champion and challenger with their versions and
    traffic shares, the A/B experiment, the latest drift verdict, runs waiting for a decision, and the
    next scheduled runs. Exits 1 when a part could not be read."""
    from loopline.status import gather, render

    found = gather(get_settings(), model, target)
    for line in render(found):
        typer.echo(line)
    if found.problems:
        raise typer.Exit(code=1)
