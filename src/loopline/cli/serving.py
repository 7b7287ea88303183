"""Commands that serve models: model servers, the A/B router, images, manifests, deployments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from loopline.cli import app, fail
from loopline.errors import LooplineError
from loopline.settings import get_settings

if TYPE_CHECKING:
    from loopline.deploy.base import DeployTarget


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
        fail(exc)


@app.command("demo-traffic")
def demo_traffic(
    url: str = typer.Option(None, "--url", help="The router (default: the local one, LOOPLINE_ROUTER_PORT)."),
    rate: float = typer.Option(20.0, "--rate", help="Requests per second."),
    seconds: float = typer.Option(600, "--seconds", help="Stop after this long."),
    users: int = typer.Option(200, "--users", help="Distinct user ids."),
    feedback_share: float = typer.Option(0.6, "--feedback-share", help="Share of answers given feedback."),
    feedback_delay: float = typer.Option(2.0, "--feedback-delay", help="Seconds before feedback is sent."),
    task_type: str = typer.Option(
        "classification", "--task-type", help="classification: digits; detection: scenes of digits."
    ),
) -> None:
    """DEMO TRAFFIC CLIENT: users sending fresh digit images through the A/B router and the true label as
    feedback for a share of them (for a detector: scenes of digits and their true boxes). Stands in for an
    application; not for real data."""
    import asyncio

    from loopline.rollout.demo_traffic import DemoImages, DemoScenes, send_traffic
    from loopline.rollout.service import router_url

    if task_type not in ("classification", "detection"):
        fail(LooplineError(f"Unknown task type {task_type!r}: use classification or detection."))
    target = url or router_url(get_settings())
    typer.echo(f"demo traffic: {rate:g} requests/s for {seconds:g} s to {target}")
    images = DemoScenes() if task_type == "detection" else DemoImages()
    stats = asyncio.run(
        send_traffic(target, seconds, rate, users, feedback_share, feedback_delay, images=images)
    )
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
        fail(exc)
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
            fail(exc)
        sampler = ServedImageSampler(where.sample_rate, images, store.insert_samples)
        typer.echo(f"keeping {where.sample_rate:.1%} of served images in {images.uri('production')}")
    try:
        run_router(
            where, lambda: store.latest_experiment(model), writer, writer.feedback_is_known, sampler=sampler
        )
    finally:
        typer.echo(f"router stopped: {writer.close()}")


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
        fail(exc)
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
        fail(exc)
    typer.echo(f"built {', '.join(built.tags)} ({built.image_id})")
    for ref in built.pushed:
        typer.echo(f"pushed {ref}")


def _deploy_target(model: str, target: str | None) -> DeployTarget:
    from loopline.deploy.targets import open_target

    settings = get_settings()
    tracking, data = settings.resolved_mlflow_tracking_uri, settings.resolved_data_root
    return open_target(target, settings, tracking, model, data)


TARGET_HELP = "Deploy target: local, docker or kubernetes (default: LOOPLINE_DEPLOY_TARGET, else local)."


@app.command("deployments")
def deployments(
    model: str = typer.Option("loopline-classifier", "--model", help="Registered model."),
    target: str = typer.Option(None, "--target", help=TARGET_HELP),
) -> None:
    """What serves where: role, version, state, URL. Exits 1 unless all serve."""
    try:
        records = _deploy_target(model, target).status()
    except (LooplineError, ValueError) as exc:
        fail(exc)
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
        fail(exc)
    typer.echo(f"{record.model} v{record.version} serves as champion at {record.url} ({record.reason})")
