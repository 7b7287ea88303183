"""What does the Prefect UI render in a markdown artifact? Screenshot an artifact page in headless Chromium.

Starts a real Prefect server and a real MLflow server (temporary home, free loopback ports) and publishes
one ``model-evaluation`` markdown artifact: the report ``render_evaluation`` writes for a challenger
(demo digits; its gallery of mistakes shows ``thumbnail_png`` pictures as ``data:`` URIs, as the register
flow publishes it), followed by the same pictures shown two other ways for comparison: an ``http`` URL
through the MLflow server's artifact proxy (``/get-artifact?path=…&run_uuid=…``, the thumbnails logged as
artifacts of a run) and raw HTML ``<img>``. Then it opens the artifact page in headless Chromium, in the
default UI and in the V2 UI (``/v2``), and writes a screenshot of each (OUT.png and OUT-v2.png).

Run: ``.venv/bin/python scripts/screenshot_artifact.py OUT.png`` (needs ``apt-get install -y chromium``),
then look at OUT.png. The servers are stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,3400",  # tall enough for the whole report and its gallery
    "--virtual-time-budget=15000",
]


def digit_pictures(count: int) -> dict[str, tuple[int, bytes]]:
    """``count`` demo digits: content hash → (digit, gallery thumbnail PNG)."""
    import hashlib

    from sklearn.datasets import load_digits

    from loopline.data.demo import png_bytes, render_digit
    from loopline.registry.evaluate import thumbnail_png

    digits = load_digits()
    pictures = {}
    for i in range(count):
        image = render_digit(digits.images[i], 32).convert("RGB")
        pictures[hashlib.sha256(png_bytes(image)).hexdigest()] = (int(digits.target[i]), thumbnail_png(image))
    return pictures


def evaluation_report(pictures: dict[str, tuple[int, bytes]]) -> str:
    """The register flow's report for a challenger that gets every fourth of these digits wrong."""
    from loopline.registry.evaluation import Evaluation, Prediction
    from loopline.registry.gate import GateRules, compare, model_gate
    from loopline.registry.report import render_evaluation

    labels = tuple(str(d) for d in range(10))
    truth = {h: str(digit) for h, (digit, _) in pictures.items()}
    champion = {h: Prediction(t, t, 0.9) for h, t in truth.items()}
    challenger = {
        h: Prediction(t, str((int(t) + 1) % 10) if i % 4 == 0 else t, 0.99 - i / 100)
        for i, (h, t) in enumerate(truth.items())
    }
    new, old = (Evaluation.from_predictions(labels, p, "demo") for p in (challenger, champion))
    comparison = compare(new, old)
    verdict = model_gate(new, comparison, GateRules())
    thumbnails = {h: png for h, (_, png) in pictures.items()}
    return render_evaluation("loopline-classifier", "2", new, old, "1", comparison, verdict, thumbnails.get)


def other_ways(pictures: dict[str, tuple[int, bytes]], links: dict[str, str]) -> str:
    lines = ["", "## The same pictures, other ways", "", "| variant | image |", "|---|---|"]
    for content_hash in list(pictures)[:2]:
        link = links[content_hash]
        lines.append(f"| markdown, MLflow proxy URL | ![{content_hash[:8]}]({link}) |")
        lines.append(f'| HTML img, MLflow proxy URL | <img src="{link}" width="96"> |')
    return "\n".join(lines) + "\n"


def screenshot(url: str, out: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed. To fix this, run `apt-get install -y chromium`.")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
            check=True,
            timeout=120,
            capture_output=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the screenshot (PNG)")
    parser.add_argument("--markdown", type=Path, help="publish this markdown instead of the variants")
    args = parser.parse_args()

    from loopline.services.standalone import running_service

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with (
            running_service("mlflow", home / "mlflow", ROOT) as (mlflow_spec, _),
            running_service("prefect-server", home / "prefect", ROOT) as (prefect_spec, prefect_settings),
        ):
            import mlflow

            mlflow.set_tracking_uri(mlflow_spec.url)
            client = mlflow.MlflowClient(mlflow_spec.url)
            run_id = client.create_run(client.create_experiment("screenshot")).info.run_id
            pictures = digit_pictures(40)
            for content_hash, (_, png) in pictures.items():
                path = home / f"{content_hash}.png"
                path.write_bytes(png)
                client.log_artifact(run_id, str(path), "evaluation/mistakes")
            links = {
                h: f"{mlflow_spec.url}/get-artifact?path=evaluation/mistakes/{h}.png&run_uuid={run_id}"
                for h in pictures
            }
            if args.markdown:
                markdown = args.markdown.read_text()
            else:
                markdown = evaluation_report(pictures) + other_ways(pictures, links)

            os.environ["PREFECT_API_URL"] = prefect_settings.resolved_prefect_api_url
            from prefect.artifacts import create_markdown_artifact

            artifact_id = create_markdown_artifact(markdown=markdown, key="model-evaluation")
            for ui, out in (("", args.out), ("/v2", args.out.with_name(f"{args.out.stem}-v2.png"))):
                url = f"{prefect_spec.url}{ui}/artifacts/artifact/{artifact_id}"
                screenshot(url, out)
                print(f"artifact page {url}\nscreenshot {out}")


if __name__ == "__main__":
    main()
