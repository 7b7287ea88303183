# The model server: `loopline serve` on port 8080 (onnxruntime + FastAPI + MLflow's registry client).
# No torch, no Prefect. Built by `loopline images build serve`, which stages this file with
# requirements.txt (the serving subset of requirements/requirements.lock), constraints.txt (the lock) and
# wheels/ (downloaded on the host: the build itself needs no network).
#   docker run --read-only --tmpfs /tmp --tmpfs /var/cache/loopline:uid=10001,gid=10001 \
#     -e LOOPLINE_MLFLOW_TRACKING_URI=http://mlflow:5000 IMAGE serve --model NAME --alias champion \
#     --host 0.0.0.0 --port 8080
# (on Kubernetes the model cache and /tmp are emptyDir volumes: deployments/kubernetes/)
# The MLflow server must serve the artifacts (`mlflow server --serve-artifacts`); a client reading S3
# directly would need boto3 here too.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/loopline \
    PATH=/opt/loopline/bin:$PATH \
    LOOPLINE_HOME=/var/cache/loopline \
    HOME=/tmp

COPY requirements.txt constraints.txt /tmp/build/
COPY wheels /tmp/build/wheels
RUN python3 -m venv /opt/loopline \
 && pip install --no-cache-dir --no-index --find-links /tmp/build/wheels \
        -r /tmp/build/requirements.txt -c /tmp/build/constraints.txt \
 && pip install --no-cache-dir --no-index --no-deps /tmp/build/wheels/loopline-*.whl \
 && rm -rf /tmp/build \
 && groupadd --gid 10001 loopline \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loopline \
 && mkdir -p /var/cache/loopline \
 && chown 10001:10001 /var/cache/loopline

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["loopline"]
CMD ["serve", "--help"]
