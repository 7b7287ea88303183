"""``loopline lineage`` as text: one block per step of the chain, a broken link where it broke and why."""

from __future__ import annotations

from collections.abc import Callable

from loopline.lineage import Lineage, StepName

_WIDTH = 13  # the step names' column


def _line(step: str, text: str) -> str:
    return f"{step:<{_WIDTH}}{text}"


def _more(text: str) -> str:
    return f"{'':<{_WIDTH}}{text}"


def render_lineage(lineage: Lineage, images_shown: int = 10) -> list[str]:
    """Readable lines of ``lineage``; ``images_shown`` training images listed (``--json`` has all)."""
    lines = [f"lineage of {lineage.query}" + ("" if lineage.complete else "  (INCOMPLETE: see BROKEN)")]
    steps: list[tuple[StepName, Callable[[Lineage], list[str]]]] = [
        ("request", _request),
        ("model", _model),
        ("training", _training),
        ("labels", _labels),
        ("label_studio", _label_studio),
        ("dataset", _datasets),
        ("images", lambda found: _images(found, images_shown)),
    ]
    for step, render in steps:
        lines += render(lineage)
        lines += [_line(step, f"BROKEN: {link.why}") for link in lineage.broken if link.step == step]
    return lines


def _request(lineage: Lineage) -> list[str]:
    if (r := lineage.request) is None:
        return []
    answer = f"predicted {r.predicted_label!r}" if r.predicted_label is not None else "no prediction"
    if r.confidence is not None:
        answer += f" ({r.confidence:.3f})"
    fallback = ", the champion answered after the challenger failed" if r.fallback else ""
    return [
        _line("request", f"{r.request_id} at {r.at}: HTTP {r.status}, {r.latency_ms:.1f} ms"),
        _more(f"experiment {r.experiment}, {r.variant} arm{fallback}"),
        _more(f"answered by {r.model or '(unknown model)'} v{r.model_version}: {answer}"),
    ]


def _model(lineage: Lineage) -> list[str]:
    if (m := lineage.model) is None:
        return []
    aliases = f" @{', @'.join(m.aliases)}" if m.aliases else ""
    lines = [_line("model", f"{m.name} v{m.version}{aliases}, registered {m.created}")]
    if review := m.tags.get("review.decision"):
        comment = m.tags.get("review.comment", "")
        by = m.tags.get("review.reviewer", "?")
        lines.append(_more(f"review: {review} by {by}" + (f" ({comment})" if comment else "")))
    for key, label in (("git.commit", "git commit"), ("prefect.flow_run_url", "flow run")):
        if m.tags.get(key):
            lines.append(_more(f"{label}: {m.tags[key]}"))
    return lines


def _training(lineage: Lineage) -> list[str]:
    if (t := lineage.training) is None:
        return []
    metrics = ", ".join(
        f"{k} {t.metrics[k]:.3f}" for k in ("test_accuracy", "best_val_accuracy") if k in t.metrics
    )
    lines = [_line("training", f"MLflow run {t.run_id} ({t.run_name}, {t.status}): {metrics}")]
    if t.study:
        best, trials = t.params.get("best.trial", "?"), t.params.get("n_trials", "?")
        chosen = ", ".join(
            f"{k[5:]}={v}" for k, v in t.params.items() if k.startswith("best.") and k != "best.trial"
        )
        lines.append(_more(f"Optuna study {t.study}: best trial {best} of {trials}: {chosen}"))
    if t.tags.get("optuna.storage"):
        lines.append(_more(f"study storage: {t.tags['optuna.storage']}"))
    if t.tags.get("hardware"):
        lines.append(_more(f"trained on {t.tags['hardware']}"))
    return lines


def _labels(lineage: Lineage) -> list[str]:
    if (lab := lineage.labels) is None:
        return []
    classes = ", ".join(f"{k} {v}" for k, v in lab.classes.items())
    splits = " / ".join(f"{k} {v}" for k, v in lab.splits.items())
    alphas = []
    if lab.alpha_at_gate is not None:
        alphas.append(f"{lab.alpha_at_gate:.3f} at the label stage's gate")
    if lab.alpha is not None:
        alphas.append(f"{lab.alpha:.3f} over this manifest's multiply-annotated images")
    return [
        _line("labels", f"labeled manifest {lab.version}: {lab.images} images ({lab.uri})"),
        _more(f"splits {splits}; classes {classes}"),
        _more("agreement (Krippendorff's alpha): " + ("; ".join(alphas) or "none")),
    ]


def _label_studio(lineage: Lineage) -> list[str]:
    lines = []
    for rnd in lineage.label_studio:
        count = f"{rnd.images} images" if rnd.images is not None else "images unknown"
        where = f"{count} of dataset {rnd.dataset_version} ({rnd.project_url})"
        lines.append(_line("label_studio", f"project {rnd.project_id}, export {rnd.export_id}: {where}"))
    if lineage.labels is None:
        return lines
    for a in lineage.labels.annotators:
        who = (f"user {a.user_id}" if a.user_id is not None else "unknown user") + (
            f" ({a.name})" if a.name else ""
        )
        agree = f"{a.annotations} annotations, {a.agreement:.0%} agree with the final label"
        lines.append(_line("annotator", f"{who}: {agree}"))
    if lineage.labels.names_note:
        lines.append(_more(f"({lineage.labels.names_note})"))
    return lines


def _datasets(lineage: Lineage) -> list[str]:
    lines = []
    for d in lineage.datasets:
        lines.append(
            _line("dataset", f"{d.version}: {d.images} images, {d.trained_on} trained this model ({d.uri})")
        )
        lines += [_more(f"{n} collected from {folder}") for folder, n in d.sources.items()]
    return lines


def _images(lineage: Lineage, shown: int) -> list[str]:
    if not lineage.images:
        return []
    lines = [_line("images", f"{len(lineage.images)} (content hash, label, split, source)")]
    for image in lineage.images[:shown]:
        source = image.source_uri or f"(source unknown) {image.stored_uri}"
        lines.append(_more(f"{image.content_hash[:16]:<16}  {image.label:<8} {image.split:<5} {source}"))
    if len(lineage.images) > shown:
        lines.append(_more(f"... {len(lineage.images) - shown} more (--json lists all)"))
    return lines
