# The training worker's image: the whole project (torch, Prefect, prefect-kubernetes) with flows/,
# tasks/, blocks/ and prefect.yaml in /opt/loopline/project, what the k8s-gpu work pool's Jobs run
# (LOOPLINE_TRAIN_IMAGE). Several GB (torch with CUDA): built outside CI by `loopline images build train`,
# which stages wheels/ (downloaded on the host), loopline-wheel/, requirements.txt (the whole lock)
# and project/.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/loopline/venv \
    PATH=/opt/loopline/venv/bin:$PATH \
    LOOPLINE_PROJECT_ROOT=/opt/loopline/project \
    LOOPLINE_HOME=/tmp/loopline \
    HOME=/tmp

COPY requirements.txt constraints.txt /tmp/build/
COPY wheels /tmp/build/wheels
RUN python3 -m venv /opt/loopline/venv \
 && pip install --no-cache-dir --no-index --find-links /tmp/build/wheels \
        -r /tmp/build/requirements.txt -c /tmp/build/constraints.txt \
 && rm -rf /tmp/build \
 && groupadd --gid 10001 loopline \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loopline

COPY loopline-wheel /tmp/loopline-wheel/
RUN pip install --no-cache-dir --no-index --no-deps /tmp/loopline-wheel/loopline-*.whl \
 && rm -rf /tmp/loopline-wheel

COPY project /opt/loopline/project
WORKDIR /opt/loopline/project
USER 10001:10001
# The Prefect worker sets the command (`prefect flow-run execute`); this default only checks the image.
CMD ["python3", "-c", "import torch, prefect_kubernetes, loopline; print('loopline train image ok')"]
