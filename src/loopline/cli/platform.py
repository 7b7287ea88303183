"""Commands of the local platform, the data and the reviews."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from loopline.cli import app, fail, services_app
from loopline.errors import LooplineError, ServiceError
from loopline.settings import TIER_FILE, Tier, get_settings

if TYPE_CHECKING:
    from loopline.labeling.configs import LabelConfig
    from loopline.services.platform import ServiceStatus


@services_app.command("up")
def services_up(
    tier: Annotated[
        Tier | None,
        typer.Option(
            help="laptop: SQLite and local folders. team: PostgreSQL and an S3 API server as well, which "
            "the services and flows use instead. Remembered for this home (LOOPLINE_TIER overrides it).",
        ),
    ] = None,
) -> None:
    """Start every local service that is not running (idempotent)."""
    from loopline.services import platform

    settings = get_settings()
    if tier is not None and tier != settings.resolved_tier:
        if any(s.state != "stopped" for s in platform.status(settings)):
            fail(
                ServiceError(
                    f"The services of this home run on the {settings.resolved_tier} tier. To switch to "
                    f"{tier}, "
                    "run `loopline services down` first (each tier keeps its own state)."
                )
            )
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
        (settings.resolved_home / TIER_FILE).write_text(tier + "\n")
        settings = get_settings()
    try:
        statuses = platform.up(settings)
    except LooplineError as exc:
        fail(exc)
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
    """Create or update every deployment in prefect.yaml (`prefect deploy --all`) and loopline's automations
    (drift → retrain; failed runs, rollbacks, reviews waiting too long → the webhook). Idempotent."""
    from loopline.services.deploy import deploy_all

    settings = get_settings()
    try:
        deployed = deploy_all(settings)
    except LooplineError as exc:
        fail(exc)
    ui = settings.resolved_prefect_api_url.removesuffix("/api")
    typer.echo(f"deployments ({ui}/deployments): {', '.join(deployed.deployments)}")
    typer.echo(f"automations ({ui}/automations): {', '.join(deployed.automations) or 'up to date'}")
    if settings.notify_webhook_url is None:
        typer.echo("notifications: off (set LOOPLINE_NOTIFY_WEBHOOK_URL and deploy again)")


@app.command("demo-data")
def demo_data(
    out: str = typer.Argument(..., help="Folder to write the demo images into."),
    size: int = typer.Option(32, help="Side of the rendered images in pixels (classification)."),
    rounds: int = typer.Option(2, help="How many collection rounds to split the images into."),
    task_type: str = typer.Option(
        "classification",
        "--task-type",
        help="classification: one digit per image. detection: scenes of 0-4 digits on 96-128 px "
        "canvases, with boxes.",
    ),
    images: int = typer.Option(300, help="Scenes to write (detection)."),
) -> None:
    """Write the digits demo collection (with planted corrupt files and duplicates) and its ground truth."""
    if task_type == "detection":
        from loopline.data.demo_boxes import write_demo_boxes

        demo = write_demo_boxes(out, rounds=rounds, images=images)
        what = "digit scenes (with boxes)"
    elif task_type == "classification":
        from loopline.data.demo import write_demo_data

        demo = write_demo_data(out, size=size, rounds=rounds)
        what = "digit images"
    else:
        typer.echo(
            f"Unknown task type {task_type!r}. To fix this, pass --task-type classification or "
            "--task-type detection.",
            err=True,
        )
        raise typer.Exit(code=2)
    typer.echo(f"wrote {demo.images} {what} into {', '.join(str(r) for r in demo.rounds)}")
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
        fail(exc)
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


@app.command("gc")
def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be freed; delete nothing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Every item, kept or removed, and why."),
) -> None:
    """Remove old Prefect results, stored images no manifest or registered model names, old Label Studio
    exports and stopped model servers' files (ages: LOOPLINE_GC_*); never what is still referenced."""
    from loopline.retention.plan import Plan, render_plan
    from loopline.retention.sweep import plan_gc, sweep

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # splits.json downloads
    settings = get_settings()
    try:
        plan = plan_gc(settings)
    except LooplineError as exc:
        fail(exc)
    failed: tuple[str, ...] = ()
    if not dry_run:
        result = sweep(plan, settings)
        removed = set(result.removed)
        plan = Plan(tuple(d for d in plan.decisions if not d.remove or d.item in removed), plan.skipped)
        failed = result.failed
    for line in render_plan(plan, dry_run, verbose):
        typer.echo(line)
    for line in failed:
        typer.secho(f"not removed: {line}", fg=typer.colors.YELLOW, err=True)
    if failed:
        raise typer.Exit(code=1)


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
            fail(exc)
        for run in waiting:
            typer.echo(f"{run.id}  {run.name}  ({run.state})")
        if not waiting:
            typer.echo("no flow run is waiting for a decision")
        return
    decision: Literal["approve", "reject"] = "reject" if reject else "approve"
    try:
        send_decision(api, run_id, decision, comment, reviewer or getpass.getuser())
    except LooplineError as exc:
        fail(exc)
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
        fail(exc)
    if final != "COMPLETED":
        raise typer.Exit(code=1)


def _demo_config(xml: str) -> LabelConfig:
    """The project's config as a classification (Choices) or detection (RectangleLabels) config."""
    from loopline.errors import LabelConfigMismatch
    from loopline.labeling.configs import parse_label_config

    try:
        return parse_label_config(xml, "classification")
    except LabelConfigMismatch:
        return parse_label_config(xml, "detection")


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

    from loopline.labeling.demo_annotator import (
        BoxErrors,
        annotate_tasks,
        has_open_tasks,
        listed_projects,
        load_ground_truth,
        preannotation_savings,
    )
    from loopline.labeling.studio import KEY_MARKER, LabelStudio
    from loopline.services.credentials import label_studio_credentials

    settings = get_settings()
    truth = load_ground_truth(ground_truth)
    token = label_studio_credentials(settings).token.get_secret_value()
    deadline = time.monotonic() + seconds
    with LabelStudio(settings.resolved_label_studio_url, token) as studio:
        while time.monotonic() < deadline:
            try:
                projects = listed_projects(studio)
                for project in projects:
                    if KEY_MARKER not in (project.get("description") or ""):
                        continue
                    if not has_open_tasks(project, annotators):  # reading every task each pass loads LS
                        continue
                    config = _demo_config(project["label_config"])
                    wanted = max(annotators, int(project.get("maximum_annotations") or 1))
                    errors = BoxErrors(error_rate=error_rate)
                    run = annotate_tasks(studio, project["id"], config, truth, wanted, errors)
                    if run.created:
                        typer.echo(f"demo annotator: {run.created} annotations in project {project['id']}")
                    if run.edits:
                        saved = preannotation_savings(run.edits)
                        typer.echo(
                            f"demo annotator: pre-annotations on {saved.images} images: kept "
                            f"{saved.kept} of {saved.predicted} boxes unchanged; "
                            f"{saved.actions_per_image:.2f} actions per image against "
                            f"{saved.scratch_per_image:.2f} from scratch"
                        )
            except (LooplineError, ValueError) as exc:
                typer.echo(f"demo annotator: {exc}", err=True)
            time.sleep(interval)


@app.command("doctor")
def doctor(
    model: str = typer.Option(
        "loopline-classifier", "--model", help="Registered model whose aliases to check."
    ),
    as_json: bool = typer.Option(False, "--json", help="The findings as JSON (for scripts and CI)."),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds each request may wait for an answer."),
) -> None:
    """Check the configuration end to end (Prefect API, work pools and workers, blocks, MLflow, Label Studio,
    data root, databases): ok / warning / failed with the fix, never a secret. Exits 1 if any check failed."""
    from loopline.doctor import exit_code, run_doctor
    from loopline.doctor.render import render_check, render_json, summary

    checks = run_doctor(get_settings(), model=model, timeout=timeout)
    if as_json:
        typer.echo(render_json(checks))
    else:
        colours = {"ok": typer.colors.GREEN, "warning": typer.colors.YELLOW, "failed": typer.colors.RED}
        width = max(len(c.name) for c in checks)
        for check in checks:
            first, *rest = render_check(check, width)
            typer.secho(first, fg=colours[check.status])
            for line in rest:
                typer.echo(line)
        typer.echo(summary(checks))
    raise typer.Exit(code=exit_code(checks))
