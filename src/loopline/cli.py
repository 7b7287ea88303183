"""The ``loopline`` command: the local platform, demo data, datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import typer

from loopline.errors import LooplineError
from loopline.settings import get_settings

if TYPE_CHECKING:
    from loopline.deploy.base import DeployTarget
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
    """Create or update every deployment in prefect.yaml (`prefect deploy --all`) and loopline's automations
    (drift → retrain; failed runs, rollbacks, reviews waiting too long → the webhook). Idempotent."""
    from loopline.services.deploy import deploy_all

    settings = get_settings()
    try:
        deployed = deploy_all(settings)
    except LooplineError as exc:
        _fail(exc)
    ui = settings.resolved_prefect_api_url.removesuffix("/api")
    typer.echo(f"deployments ({ui}/deployments): {', '.join(deployed.deployments)}")
    typer.echo(f"automations ({ui}/automations): {', '.join(deployed.automations) or 'up to date'}")
    if settings.notify_webhook_url is None:
        typer.echo("notifications: off (set LOOPLINE_NOTIFY_WEBHOOK_URL and deploy again)")


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
        _fail(exc)
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
    workers: int = typer.Option(None, "--workers", help="Processes on one socket (default 1)."),
) -> None:
    """Serve a registered model over HTTP: Open Inference Protocol v2, /v1/predict, /metrics."""
    from loopline.serving.runner import serve_model
    from loopline.serving.settings import ServingSettings

    settings = get_settings()
    chosen: dict[str, Any] = {"host": host, "port": port, "poll_seconds": poll_seconds, "workers": workers}
    serving = ServingSettings(
        model_name=model, selector=version or alias, **{k: v for k, v in chosen.items() if v is not None}
    )
    try:
        serve_model(
            serving, settings.resolved_mlflow_tracking_uri, settings.resolved_home / "cache" / "models"
        )
    except LooplineError as exc:
        _fail(exc)


@app.command("demo-traffic")
def demo_traffic(
    url: str = typer.Option(None, "--url", help="The router (default: the local one, LOOPLINE_ROUTER_PORT)."),
    rate: float = typer.Option(20.0, "--rate", help="Requests per second."),
    seconds: float = typer.Option(600, "--seconds", help="Stop after this long."),
    users: int = typer.Option(200, "--users", help="Distinct user ids."),
    feedback_share: float = typer.Option(0.6, "--feedback-share", help="Share of answers given feedback."),
    feedback_delay: float = typer.Option(2.0, "--feedback-delay", help="Seconds before feedback is sent."),
) -> None:
    """DEMO TRAFFIC CLIENT: users sending fresh digit images through the A/B router and the true label as
    feedback for a share of them (stands in for an application; not for real data)."""
    import asyncio

    from loopline.rollout.demo_traffic import send_traffic
    from loopline.rollout.service import router_url

    target = url or router_url(get_settings())
    typer.echo(f"demo traffic: {rate:g} requests/s for {seconds:g} s to {target}")
    stats = asyncio.run(send_traffic(target, seconds, rate, users, feedback_share, feedback_delay))
    typer.echo(f"demo traffic: {stats.summary()}")


@app.command("route")
def route(
    model: str = typer.Option("loopline-classifier", "--model", help="Model whose A/B test to route."),
    port: int = typer.Option(None, "--port", help="Default: LOOPLINE_ROUTER_PORT (8100)."),
    host: str = typer.Option(None, "--host", help="Default: 127.0.0.1 (0.0.0.0 exposes the router)."),
) -> None:
    """The A/B router in front of the model's champion and challenger servers: sticky users, the weights of
    the model's latest experiment in the event store, /v1/feedback, /metrics."""
    from loopline.rollout.router import RouterSettings
    from loopline.rollout.router_runner import run_router
    from loopline.rollout.store import EventStore
    from loopline.rollout.writer import BufferedEventWriter

    settings = get_settings()
    try:
        store = EventStore(settings.resolved_event_store_url)
    except LooplineError as exc:
        _fail(exc)
    writer = BufferedEventWriter(store)
    where = RouterSettings(host=host or settings.host, port=port or settings.router_port)
    sampler = None
    if where.sample_rate > 0:
        from loopline.data.store import open_store as open_data_store
        from loopline.rollout.sampling import ServedImageSampler

        try:
            images = open_data_store(settings.resolved_data_root, settings)
            images.check_writable()
        except LooplineError as exc:
            _fail(exc)
        sampler = ServedImageSampler(where.sample_rate, images, store.insert_samples)
        typer.echo(f"keeping {where.sample_rate:.1%} of served images in {images.uri('production')}")
    try:
        run_router(
            where, lambda: store.latest_experiment(model), writer, writer.feedback_is_known, sampler=sampler
        )
    finally:
        typer.echo(f"router stopped: {writer.close()}")


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
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=1))
    else:
        for line in render_lineage(found, images):
            typer.echo(line)
    if not found.complete:
        raise typer.Exit(code=1)


k8s_app = typer.Typer(help="Kubernetes manifests of the model server (deployments/kubernetes/).")
app.add_typer(k8s_app, name="k8s")
images_app = typer.Typer(help="Container images: the model server (serve) and the training worker (train).")
app.add_typer(images_app, name="images")


@k8s_app.command("render")
def k8s_render(
    model: str = typer.Option(..., "--model", help="Registered model to serve."),
    image: str = typer.Option(..., "--image", help="The serving image (loopline images build serve)."),
    alias: str = typer.Option(None, "--alias", help="Alias to follow (default: the role)."),
    version: str = typer.Option(None, "--version", help="Pin this version number instead of an alias."),
    role: str = typer.Option("champion", "--role", help="champion or challenger."),
    name: str = typer.Option("loopline", "--name", help="Base name of the objects (NAME-ROLE)."),
    namespace: str = typer.Option("default", "--namespace"),
    min_replicas: int = typer.Option(2, "--min-replicas"),
    max_replicas: int = typer.Option(4, "--max-replicas"),
    secret: str = typer.Option("loopline-serving", "--secret", help="Secret with the MLflow/S3 settings."),
    kserve: bool = typer.Option(False, "--kserve", help="A KServe InferenceService instead."),
    router: bool = typer.Option(
        False,
        "--router",
        help="The A/B router instead (NAME-router; reads LOOPLINE_EVENT_STORE_URL from the Secret).",
    ),
) -> None:
    """Print the model server's (or the A/B router's) manifests as YAML (validated), for GitOps or
    `kubectl apply -f -`."""
    from pydantic import ValidationError

    from loopline.deploy.kubernetes import ServingManifestParams, render_manifests, to_yaml, validate
    from loopline.rollout.k8s_router import RouterManifestParams, render_router_manifests

    try:
        if router:
            docs = render_router_manifests(
                RouterManifestParams(
                    name=name, namespace=namespace, image=image, model_name=model, secret_name=secret
                )
            )
        else:
            params = ServingManifestParams.model_validate(
                {"name": name, "namespace": namespace, "image": image, "model_name": model, "role": role,
                 "alias": alias, "version": version, "min_replicas": min_replicas,
                 "max_replicas": max_replicas, "secret_name": secret}
            )  # fmt: skip
            docs = render_manifests(params, "kserve" if kserve else "plain")
        validate(docs)
    except (LooplineError, ValidationError) as exc:
        _fail(exc)
    typer.echo(to_yaml(docs), nl=False)


@images_app.command("build")
def images_build(
    kind: str = typer.Argument(..., help="serve (the model server, no torch) or train (the k8s worker)."),
    push: str = typer.Option(None, "--push", help="Registry to push to, e.g. registry.example.com/ml."),
    base: str = typer.Option(None, "--base", help="Base image (default python:3.11-slim)."),
) -> None:
    """Build an image with the local Docker engine, wheels downloaded on the host; tag by commit + lock."""
    from loopline.deploy.images import build_image, check_kind

    try:
        built = build_image(check_kind(kind), push, base=base)
    except LooplineError as exc:
        _fail(exc)
    typer.echo(f"built {', '.join(built.tags)} ({built.image_id})")
    for ref in built.pushed:
        typer.echo(f"pushed {ref}")


def _deploy_target(model: str, target: str | None) -> DeployTarget:
    from loopline.deploy.targets import open_target

    settings = get_settings()
    tracking, data = settings.resolved_mlflow_tracking_uri, settings.resolved_data_root
    return open_target(target, settings, tracking, model, data)


TARGET_HELP = "Deploy target: local, docker or kubernetes (default: LOOPLINE_DEPLOY_TARGET, else local)."


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


@app.command("deployments")
def deployments(
    model: str = typer.Option("loopline-classifier", "--model", help="Registered model."),
    target: str = typer.Option(None, "--target", help=TARGET_HELP),
) -> None:
    """What serves where: role, version, state, URL. Exits 1 unless all serve."""
    try:
        records = _deploy_target(model, target).status()
    except (LooplineError, ValueError) as exc:
        _fail(exc)
    if not records:
        typer.echo(f"{model}: nothing is deployed")
    for r in records:
        colour = typer.colors.GREEN if r.state == "serving" else typer.colors.YELLOW
        typer.echo(
            f"{r.role:<11} {r.model} v{r.version:<4} "
            + typer.style(f"{r.state:<10}", fg=colour)
            + f" {r.url}  {r.ref}  (since {r.when}, {r.who})"
        )
    if any(r.state != "serving" for r in records):
        raise typer.Exit(code=1)


@app.command("rollback")
def rollback(
    to: str = typer.Option(None, "--to", help="Version to serve (default: the champion before this one)."),
    model: str = typer.Option("loopline-classifier", "--model", help="Registered model."),
    who: str = typer.Option(None, "--who", help="Who rolls back (default: your user name); audited."),
    target: str = typer.Option(None, "--target", help=TARGET_HELP),
) -> None:
    """Serve the previous champion again (smoke-tested) and move the `champion` alias back (audited)."""
    import getpass

    try:
        record = _deploy_target(model, target).rollback(to, who or getpass.getuser())
    except (LooplineError, ValueError) as exc:
        _fail(exc)
    typer.echo(f"{record.model} v{record.version} serves as champion at {record.url} ({record.reason})")


def main() -> None:  # pragma: no cover
    app()
