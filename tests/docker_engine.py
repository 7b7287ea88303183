"""A real Docker engine, a local image registry and a base image for the tests.

- The engine: the one DOCKER_HOST (or the default socket) names when it answers; otherwise a ``dockerd``
  this module starts as root on its own socket, with no bridge or iptables (ENVIRONMENT.md: containers
  use the host's network). Its data root is kept under ``~/.cache/loopline/docker`` so images and build
  layers survive between runs (warm CI).
- The registry: the ``docker-registry`` distribution server on a free loopback port (HTTP), storage in a
  temporary folder.
- The base image: no registry is reachable, so ``python:3.11-slim`` cannot be pulled. A Debian bookworm
  root filesystem (python 3.11) made by ``debootstrap`` is imported as ``loopline-base:bookworm``; its
  tarball is cached under ``~/.cache/loopline/images/``.

CI installs the binaries (``.ci/run``: docker.io, docker-registry, debootstrap).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loopline.services.process import free_port

BASE_IMAGE = "loopline-base:bookworm"
CACHE = Path.home() / ".cache" / "loopline"
NEEDED = {"dockerd": "docker.io", "docker-registry": "docker-registry", "debootstrap": "debootstrap"}


def _ping(host: str | None) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host) if host else docker.from_env()
        return bool(client.ping())
    except docker.errors.DockerException:
        return False


def _missing(*names: str) -> None:
    absent = [n for n in names if shutil.which(n) is None]
    if absent:
        packages = " ".join(NEEDED[n] for n in absent)
        raise RuntimeError(f"{', '.join(absent)} not installed: apt-get install -y {packages} (see .ci/run)")


@contextmanager
def docker_engine() -> Iterator[str]:
    """Yield a DOCKER_HOST URL of a running engine (started here when none answers)."""
    if _ping(os.environ.get("DOCKER_HOST")):
        yield os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return
    _missing("dockerd")
    if os.geteuid() != 0:
        raise RuntimeError("no Docker engine answers and starting dockerd needs root: set DOCKER_HOST")
    run = Path(tempfile.mkdtemp(prefix="loopline-dockerd-"))
    data = CACHE / "docker"
    data.mkdir(parents=True, exist_ok=True)
    (data / "docker.pid").unlink(missing_ok=True)  # left by a killed engine
    host = f"unix://{run / 'docker.sock'}"
    command = ["dockerd", "--storage-driver=overlay2", "--iptables=false", "--ip-masq=false",
               "--bridge=none", "--data-root", str(data), "--exec-root", str(run / "exec"),
               "--pidfile", str(run / "docker.pid"), "-H", host]  # fmt: skip
    with open(run / "dockerd.log", "wb") as log:
        engine = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _ping(host):
            if engine.poll() is not None or time.monotonic() > deadline:
                tail = (run / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dockerd did not start (exit {engine.poll()}):\n{tail}")
            time.sleep(0.2)
        yield host
    finally:
        os.killpg(engine.pid, signal.SIGTERM)
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
        shutil.rmtree(run, ignore_errors=True)


@contextmanager
def image_registry() -> Iterator[str]:
    """Yield ``127.0.0.1:PORT`` of a throw-away registry (HTTP; Docker trusts loopback registries)."""
    _missing("docker-registry")
    folder = Path(tempfile.mkdtemp(prefix="loopline-registry-"))
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(folder / "registry.log", "wb") as log:
        server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start:\n" + (folder / "registry.log").read_text())
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def ensure_base_image(client: object) -> str:
    """``loopline-base:bookworm`` in the engine, imported from a cached debootstrap tarball."""
    import docker

    assert isinstance(client, docker.DockerClient)
    try:
        client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    tarball = CACHE / "images" / "base-bookworm.tar"
    if not tarball.is_file():
        _missing("debootstrap")
        rootfs = Path(tempfile.mkdtemp(prefix="loopline-rootfs-"))
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                 "bookworm", str(rootfs)],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            tarball.parent.mkdir(parents=True, exist_ok=True)
            partial = tarball.with_suffix(".tmp")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
    client.api.import_image_from_file(str(tarball), repository="loopline-base", tag="bookworm")
    return BASE_IMAGE
