"""Save the block documents for the configured services (idempotent: overwrites the same names).

Run from the repository root: ``python -m blocks.register`` (``loopline services up`` does it).
"""

from __future__ import annotations

from prefect.filesystems import LocalFileSystem
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from blocks.servers import BLOCK_NAME, DataRoot, LabelStudioServer, MLflowServer
from loopline.services.credentials import label_studio_credentials
from loopline.settings import TEAM_BUCKET, Settings, get_settings


def register_blocks() -> list[str]:
    settings = get_settings()
    creds = label_studio_credentials(settings)
    LabelStudioServer(url=settings.resolved_label_studio_url, api_key=creds.token).save(
        BLOCK_NAME, overwrite=True
    )
    MLflowServer(tracking_uri=settings.resolved_mlflow_tracking_uri).save(BLOCK_NAME, overwrite=True)
    DataRoot(
        uri=settings.resolved_data_root,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
    ).save(BLOCK_NAME, overwrite=True)
    saved = [
        f"{cls.get_block_type_slug()}/{BLOCK_NAME}" for cls in (LabelStudioServer, MLflowServer, DataRoot)
    ]
    block_type, _, name = settings.result_storage_block.partition("/")
    if block_type == "local-file-system":  # the local platform's; a cluster saves its own shared block
        results = settings.resolved_home / "results"
        LocalFileSystem(basepath=str(results)).save(name, overwrite=True)
        saved.append(settings.result_storage_block)
    elif block_type == "s3-bucket" and settings.resolved_tier == "team":  # the one-machine team tier's
        results_bucket(settings).save(name, overwrite=True)
        saved.append(settings.result_storage_block)
    return saved


def results_bucket(settings: Settings) -> S3Bucket:
    """Prefect results in the team tier's bucket (``results/``), through its S3 server."""
    credentials = AwsCredentials(
        aws_access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        aws_client_parameters=AwsClientParameters(endpoint_url=settings.s3_endpoint_url),
    )
    return S3Bucket(bucket_name=TEAM_BUCKET, bucket_folder="results", credentials=credentials)


if __name__ == "__main__":
    for name in register_blocks():
        print(f"saved block {name}")
