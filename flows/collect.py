"""Collect stage: raw images from a folder or S3 prefix → a clean, versioned, content-addressed dataset.

Input: ``CollectParameters`` (source folder or ``s3://bucket/prefix``, quality limits, split fractions).
Output: a ``DatasetRef`` (dataset version, manifest URI, data root). Artifacts: ``collect-progress``,
``collect-counts``, ``collect-summary``.

Run it directly: ``python -m flows.collect SOURCE`` or through the deployment
``prefect deployment run 'collect-images/local' -p params='{"source": "/path/to/images"}'``.
"""

from __future__ import annotations

import sys

from prefect import flow

from tasks.collect import CollectParameters, DatasetRef, collect_images


@flow(name="collect-images")
def collect_flow(params: CollectParameters) -> DatasetRef:
    """Collect images into the data root and return the dataset version."""
    return collect_images(params)


if __name__ == "__main__":
    print(collect_flow(CollectParameters(source=sys.argv[1])).model_dump_json(indent=2))
