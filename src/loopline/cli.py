"""The ``loopline`` command: the local platform, demo data, datasets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import typer

from loopline.errors import LooplineError
from loopline.settings import get_settings

if TYPE_CHECKING:
    from loopline.services.platform import ServiceStatus

app = typer.Typer(help="loopline: the production line for the machine-learning loop.", no_args_is_help=True)
services_app = typer.Typer(help="The local platform on 127.0.0.1 (Prefect, worker, MLflow, Label Studio).")
app.add_typer(services_app, name="services")


def _fail(exc: Exception) -> NoReturn:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@services_app.command("up")
def services_up() -> None:
    """Start every local service that is not running (idempotent)."""
    from loopline.services import platform

    try:
        statuses = platform.up(get_settings())
    except LooplineError as exc:
        _fail(exc)
    _print_statuses(statuses)


@services_app.command("down")
def services_down() -> None:
    """Stop the services that `up` started (and only those)."""
    from loopline.services import platform

    stopped = platform.down(get_settings())
    typer.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@services_app.command("status")
def services_status() -> None:
    """Each service's URL and health. Exits 1 unless all are healthy."""
    from loopline.services import platform

    statuses = platform.status(get_settings())
    _print_statuses(statuses)
    if any(s.state != "healthy" for s in statuses):
        raise typer.Exit(code=1)


def _print_statuses(statuses: list[ServiceStatus]) -> None:
    for s in statuses:
        colour = typer.colors.GREEN if s.state == "healthy" else typer.colors.YELLOW
        pid = f"pid {s.pid}" if s.pid else ""
        typer.echo(f"{s.name:<15} " + typer.style(f"{s.state:<10}", fg=colour) + f" {s.url}  {pid}")


@app.command("env")
def env() -> None:
    """Print shell exports that point the prefect CLI at the local platform: eval "$(loopline env)"."""
    from loopline.services.platform import prefect_env

    for key, value in prefect_env(get_settings()).items():
        typer.echo(f"export {key}={json.dumps(value)}")


@app.command("deploy")
def deploy() -> None:
    """Create or update every deployment in prefect.yaml (`prefect deploy --all`)."""
    from loopline.services.platform import prefect_env

    settings = get_settings()
    command = [
        str(os.path.join(os.path.dirname(sys.executable), "prefect")),
        "--no-prompt",
        "deploy",
        "--all",
    ]
    env = {
        "LOOPLINE_TRAIN_IMAGE": "loopline-train:latest",  # the image of the k8s-gpu training deployment
        **os.environ,
        **prefect_env(settings),
        "LOOPLINE_DATA_ROOT": settings.resolved_data_root,
    }
    result = subprocess.run(
        command, cwd=settings.resolved_project_root, env=env, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:  # all of Prefect's words, to see what went wrong
        typer.echo(output, err=True)
        raise typer.Exit(code=result.returncode)
    import re

    names = re.findall(r"Deployment '([^']+)' successfully (?:created|updated)", " ".join(output.split()))
    ui = settings.resolved_prefect_api_url.removesuffix("/api")
    typer.echo(f"deployments ({ui}/deployments): {', '.join(names)}")


@app.command("demo-data")
def demo_data(
    out: str = typer.Argument(..., help="Folder to write the demo images into."),
    size: int = typer.Option(32, help="Side of the rendered images in pixels."),
    rounds: int = typer.Option(2, help="How many collection rounds to split the images into."),
) -> None:
    """Write the digits demo collection (with planted corrupt files and duplicates) and its ground truth."""
    from loopline.data.demo import write_demo_data

    demo = write_demo_data(out, size=size, rounds=rounds)
    typer.echo(f"wrote {demo.images} digit images into {', '.join(str(r) for r in demo.rounds)}")
    typer.echo(f"planted: {', '.join(f'{v} {k}' for k, v in demo.planted.items())}")
    typer.echo(f"ground truth (for the demo annotator only): {demo.ground_truth}")


@app.command("datasets")
def datasets(data_root: str = typer.Option(None, help="Default: LOOPLINE_DATA_ROOT.")) -> None:
    """List the dataset versions under the data root, the labeled versions built on each and, when the
    MLflow server answers, the registered model trained on each labeled version."""
    from loopline.data import catalog
    from loopline.data.store import open_store

    settings = get_settings()
    root = data_root or settings.resolved_data_root
    try:
        found = catalog.list_datasets(open_store(root, settings))
    except LooplineError as exc:
        _fail(exc)
    if not found:
        typer.echo(f"no datasets under {root}")
        return
    models, why_not = None, ""
    tracking, labeled = settings.resolved_mlflow_tracking_uri, catalog.labeled_versions(found)
    if labeled and not catalog.tracking_reachable(tracking):
        why_not = f"no MLflow tracking server answers at {tracking}"
    elif labeled:
        try:
            models = catalog.registered_models(tracking, labeled)
        except Exception as exc:  # an optional column: say why it is missing, never fail the listing
            why_not = f"the model search at {tracking} failed: {type(exc).__name__}: {exc}"
    for line in catalog.render_datasets(found, models):
        typer.echo(line)
    if why_not:
        typer.echo(f"(models not shown: {why_not})")


@app.command("approve")
def approve(
    run_id: str = typer.Argument(None, help="The flow run waiting at an approval."),
    reject: bool = typer.Option(False, "--reject", help="Reject (send back) instead of approving."),
    comment: str = typer.Option("", "--comment", help="Why: recorded in the audit trail."),
    reviewer: str = typer.Option(None, "--reviewer", help="Who decides (default: your user name)."),
    list_runs: bool = typer.Option(False, "--list", help="List the runs waiting for a decision."),
) -> None:
    """Approve (or --reject) a flow run waiting at a typed approval gate."""
    import getpass

    from loopline.approvals import list_waiting, send_decision

    api = get_settings().resolved_prefect_api_url
    if list_runs or not run_id:
        try:
            waiting = list_waiting(api)
        except LooplineError as exc:
            _fail(exc)
        for run in waiting:
            typer.echo(f"{run.id}  {run.name}  ({run.state})")
        if not waiting:
            typer.echo("no flow run is waiting for a decision")
        return
    decision: Literal["approve", "reject"] = "reject" if reject else "approve"
    try:
        send_decision(api, run_id, decision, comment, reviewer or getpass.getuser())
    except LooplineError as exc:
        _fail(exc)
    typer.echo(f"{decision}d flow run {run_id}" if decision == "approve" else f"rejected flow run {run_id}")


@app.command("watch")
def watch(
    run_id: str = typer.Argument(..., help="The flow run to follow."),
    log: Path = typer.Option(
        None, "--log", help="Where the full log goes (default: .loopline/logs/RUN.log)."
    ),
) -> None:
    """Follow a flow run: one line per step as it ends, the full log in a file, links at the end."""
    from loopline.watch import watch_run

    settings = get_settings()
    target = log or settings.resolved_home / "logs" / f"run-{run_id}.log"
    try:
        final = watch_run(settings.resolved_prefect_api_url, run_id, target, echo=typer.echo)
    except LooplineError as exc:
        _fail(exc)
    if final != "COMPLETED":
        raise typer.Exit(code=1)


@app.command("demo-annotate")
def demo_annotate(
    ground_truth: str = typer.Argument(..., help="ground_truth.json written by `loopline demo-data`."),
    annotators: int = typer.Option(2, help="Demo users answering each task."),
    error_rate: float = typer.Option(0.05, help="Share of deliberately wrong answers."),
    seconds: float = typer.Option(3600, help="Stop after this long."),
    interval: float = typer.Option(2.0, help="Seconds between passes over the projects."),
) -> None:
    """DEMO ANNOTATOR: answer loopline's Label Studio tasks from the demo ground truth (not for real data)."""
    import time

    from loopline.labeling.configs import parse_label_config
    from loopline.labeling.demo_annotator import annotate_project, load_ground_truth
    from loopline.labeling.studio import KEY_MARKER, LabelStudio
    from loopline.services.credentials import label_studio_credentials

    settings = get_settings()
    truth = load_ground_truth(ground_truth)
    token = label_studio_credentials(settings).token.get_secret_value()
    deadline = time.monotonic() + seconds
    with LabelStudio(settings.resolved_label_studio_url, token) as studio:
        while time.monotonic() < deadline:
            try:
                projects = studio.request("GET", "/api/projects", params={"page_size": 100})["results"]
                for project in projects:
                    if KEY_MARKER not in (project.get("description") or ""):
                        continue
                    config = parse_label_config(project["label_config"], "classification")
                    wanted = max(annotators, int(project.get("maximum_annotations") or 1))
                    made = annotate_project(studio, project["id"], config, truth, wanted, error_rate)
                    if made:
                        typer.echo(f"demo annotator: {made} annotations in project {project['id']}")
            except LooplineError as exc:
                typer.echo(f"demo annotator: {exc}", err=True)
            time.sleep(interval)


@app.command("serve")
def serve(
    model: str = typer.Option(..., "--model", help="Registered model to serve."),
    alias: str = typer.Option("champion", "--alias", help="Alias to serve; a hot reload follows it."),
    version: str = typer.Option(None, "--version", help="Serve this version number instead of the alias."),
    port: int = typer.Option(None, "--port", help="Default: LOOPLINE_SERVING_PORT or 8000."),
    host: str = typer.Option(None, "--host", help="Default: 127.0.0.1 (0.0.0.0 exposes the server)."),
    poll_seconds: float = typer.Option(None, "--poll-seconds", help="Alias re-check period; 0: never."),
) -> None:
    """Serve a registered model over HTTP: Open Inference Protocol v2, /v1/predict, /metrics."""
    from loopline.serving.runner import serve_model
    from loopline.serving.settings import ServingSettings

    settings = get_settings()
    chosen: dict[str, Any] = {"host": host, "port": port, "poll_seconds": poll_seconds}
    serving = ServingSettings(
        model_name=model, selector=version or alias, **{k: v for k, v in chosen.items() if v is not None}
    )
    try:
        serve_model(
            serving, settings.resolved_mlflow_tracking_uri, settings.resolved_home / "cache" / "models"
        )
    except LooplineError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover
    app()
