"""The ``kubernetes`` deploy target: each role (champion, challenger) of a registered model is one
Deployment with its Service, HorizontalPodAutoscaler and PodDisruptionBudget, rendered from
``deployments/kubernetes/`` with the version pinned (``serve --version V``, so every version is a new pod
template and a rolling update), validated strictly and applied with the official client
(:mod:`loopline.deploy.k8s_apply`).

Deploying version V to a role:
1. the role's Deployment already runs V and is rolled out: nothing is applied and nothing recorded (a
   rerun duplicates no object and no history row);
2. V's manifests are rendered and validated; a manifest the schema refuses refuses V before anything
   reaches the cluster;
3. they are applied (create or patch) and the rollout is awaited for up to ``timeout`` seconds. The gate
   is in the cluster: a new pod's readiness probe on ``/v2/health/ready`` passes only once the server has
   loaded V and warmed it up (the server refuses a model that fails to load or to run), and
   ``maxUnavailable: 0`` keeps the old pods serving until the new ones are ready. The local target's
   smoke test (answers equal to the register stage's evaluation, latency) needs a route to the pods: give
   ``smoke_url`` (role → a URL that reaches the role's Service from this process: cluster DNS when the
   flow runs in the cluster, or a port-forward) and it runs once the rollout is done;
4. a rollout that does not finish in time, an object the API server refuses or a failed smoke test
   refuses V: the previous version's manifests are applied again (the Deployment goes back to its
   previous pod template, whose ReplicaSet still serves), or, when the role served nothing before, the
   objects just created are deleted; the role's alias is moved back to what serves;
5. otherwise the role's alias points at V (an audited move) and the record says ``serving``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from loopline.deploy import history
from loopline.deploy.aliases import align_aliases, restore_alias, rollback_versions
from loopline.deploy.base import ROLES, DeploymentRecord, DeploymentRefused, DeployState, Role
from loopline.deploy.k8s_apply import (
    apply_object,
    delete_objects,
    read_deployment,
    rollout_state,
    wait_for_rollout,
)
from loopline.deploy.kubernetes import ManifestInvalid, ServingManifestParams, render_manifests, validate
from loopline.deploy.smoke import SmokeCases, smoke_test
from loopline.errors import LooplineError
from loopline.settings import Settings

log = logging.getLogger(__name__)
SELECTOR_ANNOTATION = "loopline.dev/selector"  # the version (or alias) the Deployment's pods serve


@dataclass(frozen=True)
class LiveDeployment:
    """What the cluster says about a role's Deployment."""

    version: str | None  # None: it follows an alias (rendered for GitOps), not a pinned version
    rolled_out: bool
    ready: int
    summary: str


class KubernetesTarget:
    """Model servers as Kubernetes Deployments (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        client: Any,
        tracking_uri: str,
        model: str,
        cases: Callable[[str], SmokeCases],
        api_client: Any,
        params: ServingManifestParams,
        timeout: float = 300.0,
        smoke_url: Callable[[Role], str] | None = None,
    ) -> None:
        """``client``: an ``MlflowClient``; ``cases(version)``: the smoke test's images and logits (used
        only with ``smoke_url``); ``api_client``: a ``kubernetes.client.ApiClient``; ``params``: the
        servers' base parameters (name, namespace, image, resources...); role and version are set per
        deployment; ``timeout``: seconds a rollout may take."""
        if params.model_name != model:
            raise ValueError(
                f"The manifest parameters serve model {params.model_name!r}, not {model!r}. To fix this, "
                f"build them with model_name={model!r}."
            )
        self.settings, self.client, self.tracking_uri, self.model = settings, client, tracking_uri, model
        self.cases, self.api_client, self.params = cases, api_client, params
        self.timeout, self.smoke_url = timeout, smoke_url

    def manifests(self, role: Role, version: str) -> list[dict[str, Any]]:
        """The role's manifests serving ``version`` (rendered, not yet validated)."""
        pinned = {**self.params.model_dump(), "role": role, "version": version, "alias": None}
        return render_manifests(ServingManifestParams.model_validate(pinned))

    def _names(self, role: Role) -> tuple[str, str]:
        return f"{self.params.name}-{role}", self.params.namespace

    def url(self, role: Role) -> str:
        """The role's Service inside the cluster."""
        name, namespace = self._names(role)
        return f"http://{name}.{namespace}.svc.cluster.local"

    def _ref(self, role: Role) -> str:
        name, namespace = self._names(role)
        return f"deployment/{name} -n {namespace}"

    def live(self, role: Role) -> LiveDeployment | None:
        """The role's Deployment as the cluster has it now; None when there is none."""
        deployment = read_deployment(*self._names(role), self.api_client)
        if deployment is None:
            return None
        selector = (deployment.metadata.annotations or {}).get(SELECTOR_ANNOTATION, "")
        done, summary = rollout_state(deployment)
        ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
        return LiveDeployment(selector if selector.isdigit() else None, done, ready, summary)

    def _record(
        self, version: str, role: Role, ref: str, state: DeployState, who: str, reason: str = ""
    ) -> DeploymentRecord:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        url = self.url(role)
        return DeploymentRecord(self.name, self.model, version, role, url, ref, state, when, who, reason)

    def deploy(
        self, version: str, role: Role = "champion", who: str = "loopline", why: str = "deployed"
    ) -> DeploymentRecord:
        past = history.read_history(self.client, self.model)
        last = history.serving(past, role)
        live = self.live(role)
        if live is not None and live.version == version and live.rolled_out:  # a rerun
            if last is not None and last.version == version:
                return last
            return history.save_record(
                self.client, self._record(version, role, self._ref(role), "serving", who, why)
            )
        before = (last.version if last else live.version) if live is not None else None
        docs = self.manifests(role, version)
        try:
            validate(docs)
        except ManifestInvalid as exc:  # refused before anything reached the cluster
            problem: str | None = f"ManifestInvalid: {exc}"
        else:
            problem = self._roll_out(docs, version, role)
            if problem is not None:
                problem += self._restore(role, version, before)
        if problem is not None:
            restore_alias(self.client, self.model, role, before, who, f"v{version} was refused: {problem}")
            return history.save_record(self.client, self._record(version, role, "", "refused", who, problem))
        champion = self.live("champion")
        champion_serves = champion.version if champion is not None else None
        align_aliases(self.client, self.model, version, role, champion_serves, who, why)
        if last is not None and last.version != version:
            replaced = self._record(last.version, role, "", "replaced", who, f"v{version}")
            history.save_record(self.client, replaced)
        return history.save_record(
            self.client, self._record(version, role, self._ref(role), "serving", who, why)
        )

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        """Create or patch every object (validated already), then wait for the Deployment's rollout."""
        for doc in docs:
            applied = apply_object(doc, self.api_client)
            if applied.kind == "Deployment":
                wait_for_rollout(applied.name, applied.namespace, self.api_client, self.timeout)

    def _roll_out(self, docs: list[dict[str, Any]], version: str, role: Role) -> str | None:
        """Apply ``version``'s (validated) manifests, wait for the rollout and smoke-test it (with
        ``smoke_url``); None when it serves, else why not."""
        try:
            self._apply(docs)
            if self.smoke_url is None:
                return None
            verdict = smoke_test(
                self.smoke_url(role),
                self.model,
                version,
                self.cases(version),
                self.settings.smoke_max_latency_ms,
            )
        except Exception as exc:  # whatever went wrong refuses the version; the old pods keep serving
            return f"{type(exc).__name__}: {exc}"
        return None if verdict.passed else "smoke test " + verdict.summary()

    def _restore(self, role: Role, refused: str, before: str | None) -> str:
        """Put back what served before ``refused`` was tried; a sentence for the refusal's reason."""
        try:
            if before is None:
                deleted = delete_objects(self.manifests(role, refused), self.api_client)
                return f" The role served nothing before: deleted {', '.join(deleted) or 'nothing'}."
            if before != refused:
                docs = self.manifests(role, before)
                validate(docs)
                self._apply(docs)
                return f" v{before} was applied again and serves."
        except LooplineError as exc:
            log.error("restoring %s %s after v%s was refused failed: %s", self.model, role, refused, exc)
            return f" Restoring v{before} failed too ({type(exc).__name__}: {exc})."
        return ""

    def status(self) -> list[DeploymentRecord]:
        past = history.read_history(self.client, self.model)
        found = []
        for role in ROLES:
            last = history.serving(past, role)
            live = self.live(role)
            if live is None:
                if last is not None and not history.undeployed(past, role):  # gone, not undeployed
                    found.append(replace(last, state="stopped", ref=""))
                continue
            state: DeployState = "serving" if live.rolled_out and live.ready > 0 else "unhealthy"
            version = live.version or (last.version if last else "?")
            base = last or self._record(version, role, "", state, "?")
            reason = "" if state == "serving" else live.summary
            found.append(replace(base, version=version, state=state, ref=self._ref(role), reason=reason))
        return found

    def rollback(self, to: str | None = None, who: str = "loopline") -> DeploymentRecord:
        target, current = rollback_versions(self.client, self.model, to)
        record = self.deploy(target, "champion", who, f"rollback from v{current}")
        if record.state != "serving":
            name, namespace = self._names("champion")
            raise DeploymentRefused(
                f"Rolling {self.model} back to v{target} failed ({record.reason}); v{current} keeps serving. "
                f"To fix this, see `kubectl -n {namespace} describe deployment {name}` and the pods' logs, "
                "then roll back to another version."
            )
        return record

    def undeploy(self, role: Role, who: str = "loopline") -> DeploymentRecord | None:
        last = history.serving(history.read_history(self.client, self.model), role)
        live = self.live(role)
        version = (live.version if live else None) or (last.version if last else None) or "0"
        deleted = delete_objects(self.manifests(role, version), self.api_client)
        if not deleted or last is None:
            return None
        reason = f"undeployed ({', '.join(deleted)})"
        return history.save_record(self.client, self._record(last.version, role, "", "stopped", who, reason))
