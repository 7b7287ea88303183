"""Container images of loopline, built with the local Docker engine (Python ``docker`` SDK, classic
builder) from ``deployments/docker/``.

Builds are hermetic: the wheels are downloaded on the host first (``pip download --only-binary=:all:``,
versions pinned by ``requirements/requirements.lock``) and installed in the image with ``pip install
--no-index``. Tags name the git commit and the lock's hash: ``loopline-serve:<commit>-<lock>``.

- ``serve``: the model server: onnxruntime, FastAPI, MLflow's registry client (mlflow-skinny), no torch.
- ``train``: the whole project with torch and prefect-kubernetes, what the k8s-gpu work pool's jobs run
  (several GB: built outside CI).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from loopline.errors import LooplineError

log = logging.getLogger(__name__)
ImageKind = Literal["serve", "train"]
DEFAULT_BASE = "python:3.11-slim"
# The serving image's top-level packages; their dependencies come along, pinned by the lock.
SERVE_PACKAGES = (
    "onnxruntime", "numpy", "pillow", "fastapi", "uvicorn", "httptools", "prometheus-client",
    "python-multipart", "httpx", "pydantic", "pydantic-settings", "mlflow-skinny",
    "typer",  # the `loopline` command
    "sqlalchemy", "psycopg", "psycopg-binary",  # the A/B router (`loopline route`) and its event store
)  # fmt: skip
# What the wheels are for: the images' interpreter, whatever the host runs. pip does not widen a
# --platform tag to older glibc versions, so every manylinux tag up to the base image's glibc (Debian
# bookworm, as python:3.11-slim: 2.36) is named.
_PLATFORMS = ["manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37))]
_TARGET = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
           *(arg for platform in _PLATFORMS for arg in ("--platform", platform))]  # fmt: skip


class DockerEngineUnavailable(LooplineError):
    """No Docker engine answers (not installed, not running, or DOCKER_HOST points elsewhere)."""


class ImageBuildFailed(LooplineError):
    """Downloading the wheels, building or pushing an image failed; the message has the last log lines."""


@dataclass(frozen=True)
class BuiltImage:
    """An image built (and maybe pushed)."""

    kind: ImageKind
    image_id: str
    tags: tuple[str, ...]
    pushed: tuple[str, ...]
    size_bytes: int


def check_kind(kind: str) -> ImageKind:
    valid: tuple[ImageKind, ...] = get_args(ImageKind)
    for known in valid:
        if kind == known:
            return known
    raise ImageBuildFailed(f"unknown image kind {kind!r}: valid kinds are {', '.join(valid)}")


def project_root() -> Path:
    """The checkout holding ``deployments/docker/`` (images are built from a checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deployments" / "docker").is_dir() and (parent / "pyproject.toml").is_file():
            return parent
    raise ImageBuildFailed(f"no loopline checkout (deployments/docker/) above {here}: build from a checkout")


def requirements_subset(kind: ImageKind, lock: Path) -> list[str]:
    """``name==version`` lines for the image: for ``serve`` the top-level serving packages pinned as
    the lock pins them (pip resolves their dependencies under the lock as constraints); for ``train``
    the whole lock."""
    pins = {}
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            pins[_normalise(line.split("==", 1)[0])] = line.split(";", 1)[0].strip()
    if kind == "train":
        return sorted(pins.values())
    missing = [p for p in SERVE_PACKAGES if _normalise(p) not in pins]
    if missing:
        raise ImageBuildFailed(
            f"{lock} pins none of {', '.join(missing)}: regenerate the lock (it must pin every package of "
            "the serving image)"
        )
    return [pins[_normalise(p)] for p in SERVE_PACKAGES]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _git_commit(root: Path) -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD") or "nogit"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def image_tag(kind: ImageKind, root: Path) -> str:
    """``loopline-KIND:<commit>-<first 12 hex of the lock's sha256>``."""
    lock_hash = hashlib.sha256((root / "requirements" / "requirements.lock").read_bytes()).hexdigest()[:12]
    return f"loopline-{kind}:{_git_commit(root)}-{lock_hash}"


def docker_client() -> Any:
    """A client of the engine at DOCKER_HOST (or the default socket), checked with a ping."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise DockerEngineUnavailable(
            f"no Docker engine answers ({exc}). Start it (`sudo systemctl start docker`, or `dockerd &` as "
            "root), or point DOCKER_HOST at a running one (e.g. DOCKER_HOST=unix:///run/docker.sock)"
        ) from exc
    return client


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise ImageBuildFailed(
            f"`{' '.join(command[:4])} …` failed (exit {result.returncode}):\n{tail}\n"
            "The host needs the package index (or a mirror via PIP_INDEX_URL) to download the wheels"
        )


def wheel_cache(kind: ImageKind, root: Path) -> Path:
    """The wheels of an image's dependencies, downloaded once per lock and package list:
    ``~/.cache/loopline/wheels/KIND-HASH``."""
    lock = root / "requirements" / "requirements.lock"
    wanted = "\n".join(requirements_subset(kind, lock)).encode()
    key = hashlib.sha256(lock.read_bytes() + b"\0" + wanted).hexdigest()[:12]
    return Path.home() / ".cache" / "loopline" / "wheels" / f"{kind}-{key}"


def download_wheels(kind: ImageKind, root: Path) -> Path:
    """Every wheel the image installs but loopline's own, for the image's Python (cached per lock)."""
    cache = wheel_cache(kind, root)
    if (cache / ".complete").is_file():
        return cache
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    lock = root / "requirements" / "requirements.lock"
    (partial / "requirements.txt").write_text("\n".join(requirements_subset(kind, lock)) + "\n")
    _run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", *_TARGET, "-d", str(partial),
          "-r", str(partial / "requirements.txt"), "-c", str(lock)], root)  # fmt: skip
    (partial / ".complete").touch()
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return cache


def stage_context(kind: ImageKind, root: Path, context: Path) -> Path:
    """Fill ``context`` with the Dockerfile, .dockerignore, the requirements, the dependencies' wheels
    (``wheels/``, one layer, cached by the engine while the lock is unchanged) and loopline's own wheel
    (``loopline-wheel/``, a small layer of its own)."""
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    docker_dir, lock = root / "deployments" / "docker", root / "requirements" / "requirements.lock"
    shutil.copy(docker_dir / f"{kind}.Dockerfile", context / "Dockerfile")
    shutil.copy(docker_dir / ".dockerignore", context / ".dockerignore")
    wheels = download_wheels(kind, root)
    shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns(".complete", "*.txt"))
    shutil.copy(wheels / "requirements.txt", context / "requirements.txt")
    shutil.copy(lock, context / "constraints.txt")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(context / "loopline-wheel"),
          str(root)], root)  # fmt: skip
    if kind == "train":  # flows, tasks and blocks: the Prefect deployment runs them from the image
        for folder in ("flows", "tasks", "blocks"):
            shutil.copytree(root / folder, context / "project" / folder)
        shutil.copy(root / "prefect.yaml", context / "project" / "prefect.yaml")
    return context


def build_image(kind: ImageKind, push: str | None = None, *, base: str | None = None) -> BuiltImage:
    """Build the ``kind`` image with the local engine; with ``push`` (a registry, e.g.
    ``registry.example.com/ml``) also tag and push it there.

    Raises:
        DockerEngineUnavailable: no engine answers (checked first, before any download).
        ImageBuildFailed: wheels, build or push failed.
    """
    import docker

    client = docker_client()
    root = project_root()
    tag = image_tag(kind, root)
    context = stage_context(kind, root, root / ".loopline" / "build" / kind)
    log.info("building %s from %s", tag, context)
    try:
        image, _ = client.images.build(
            path=str(context), tag=tag, buildargs={"BASE": base or DEFAULT_BASE}, rm=True, forcerm=True
        )
    except docker.errors.BuildError as exc:
        lines = [str(item.get("stream", item.get("error", ""))).rstrip() for item in exc.build_log]
        raise ImageBuildFailed(f"building {tag} failed: {exc}\n" + "\n".join(lines[-15:])) from exc
    repository, version = tag.split(":")
    image.tag(repository, "latest")
    pushed = []
    if push:
        remote = f"{push.rstrip('/')}/{repository}"
        image.tag(remote, version)
        for line in client.images.push(remote, tag=version, stream=True, decode=True):
            if "error" in line:
                raise ImageBuildFailed(
                    f"pushing {remote}:{version} failed: {line['error']}. Log in with `docker login "
                    f"{push.split('/')[0]}` or check that the registry is reachable"
                )
        pushed.append(f"{remote}:{version}")
    size = int(image.attrs.get("Size", 0))
    return BuiltImage(kind, str(image.id), (tag, f"{repository}:latest"), tuple(pushed), size)
