# The model server, `loopline serve` on port 8080 (onnxruntime + FastAPI + MLflow's registry client), and
# the A/B router, `loopline route` (SQLAlchemy + psycopg for its event store).
# No torch, no Prefect. Built by `loopline images build serve`, which stages this file with
# requirements.txt (the serving subset of requirements/requirements.lock), constraints.txt (the lock),
# wheels/ (the dependencies, downloaded on the host: the build itself needs no network) and
# loopline-wheel/ (installed in a layer of its own, so a code change does not reinstall the dependencies).
#   docker run --read-only --tmpfs /tmp --tmpfs /var/cache/loopline:uid=10001,gid=10001 \
#     -e LOOPLINE_MLFLOW_TRACKING_URI=http://mlflow:5000 IMAGE serve --model NAME --alias champion
# The server binds LOOPLINE_SERVING_HOST:LOOPLINE_SERVING_PORT (0.0.0.0:8080 here); the HEALTHCHECK asks
# the same port for readiness (loopline's Docker target runs containers on the host's network, on the
# role's port).
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
    LOOPLINE_SERVING_HOST=0.0.0.0 \
    LOOPLINE_SERVING_PORT=8080 \
    HOME=/tmp

COPY requirements.txt constraints.txt /tmp/build/
COPY wheels /tmp/build/wheels
RUN python3 -m venv /opt/loopline \
 && pip install --no-cache-dir --no-index --find-links /tmp/build/wheels \
        -r /tmp/build/requirements.txt -c /tmp/build/constraints.txt \
 && rm -rf /tmp/build \
 && groupadd --gid 10001 loopline \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loopline \
 && mkdir -p /var/cache/loopline \
 && chown 10001:10001 /var/cache/loopline

COPY loopline-wheel /tmp/loopline-wheel/
RUN pip install --no-cache-dir --no-index --no-deps /tmp/loopline-wheel/loopline-*.whl \
 && rm -rf /tmp/loopline-wheel

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ['LOOPLINE_SERVING_PORT'], timeout=2)"]
ENTRYPOINT ["loopline"]
CMD ["serve", "--help"]
