# syntax=docker/dockerfile:1.7
# CineSync images. Targets:
#   serve      CPU serving image: python slim, .[serve] only (no torch), non-root, one uvicorn worker
#   serve-gpu  GPU serving image: CUDA runtime + cuDNN, .[serve,gpu] (onnxruntime-gpu, CUDA FAISS)
#   train      training image: .[train] with the CPU build of torch==2.13.0
#   loadtest   the serve image plus locust, for `docker compose --profile load`
# Dependencies are installed in a layer before the code, so a code change rebuilds only the last one.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------- base: python, venv, user
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 cinesync \
 && useradd --system --uid 10001 --gid cinesync --home-dir /app --shell /usr/sbin/nologin cinesync \
 && python -m venv /opt/venv \
 && mkdir -p /app /store \
 && chown cinesync:cinesync /app /store
WORKDIR /app

# ---------------------------------------------------------------- wheel: the project code only
FROM base AS wheel
COPY pyproject.toml README.md ./
COPY service/ service/
COPY model_store/ model_store/
COPY training/ training/
COPY loadtests/ loadtests/
COPY benchmarks/ benchmarks/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------- serve: CPU serving image
FROM base AS serve-deps
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN cd /tmp/build && python requirements.py serve > requirements.txt \
 && pip install -r requirements.txt && rm -rf /tmp/build

FROM serve-deps AS serve
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
ENV CINESYNC_STORE_DIR=/store \
    CINESYNC_ENV=production
USER cinesync
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["cinesync", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- loadtest: serve + locust
FROM serve AS loadtest
USER root
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN cd /tmp/build && python requirements.py dev:locust > requirements.txt \
 && pip install -r requirements.txt && rm -rf /tmp/build
USER cinesync
HEALTHCHECK NONE
CMD ["python", "-m", "loadtests.run", "--help"]

# ---------------------------------------------------------------- serve-gpu: CUDA serving image
FROM ${CUDA_IMAGE} AS serve-gpu
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cinesync \
 && useradd --system --uid 10001 --gid cinesync --home-dir /app --shell /usr/sbin/nologin cinesync \
 && python3 -m venv /opt/venv \
 && mkdir -p /app /store \
 && chown cinesync:cinesync /app /store
WORKDIR /app
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN cd /tmp/build && python requirements.py serve gpu > requirements.txt \
 && pip install -r requirements.txt && rm -rf /tmp/build
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels
ENV CINESYNC_STORE_DIR=/store \
    CINESYNC_ENV=production \
    CINESYNC_ENCODER__USE_GPU=true \
    CINESYNC_INDEX__KIND=gpu
USER cinesync
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["cinesync", "serve", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------- train: torch (CPU wheel) + training code
FROM base AS train-deps
ARG TORCH_INDEX_URL
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && cd /tmp/build && python requirements.py train > requirements.txt \
 && pip install -r requirements.txt && rm -rf /tmp/build

FROM train-deps AS train
COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels \
 && mkdir -p /data && chown cinesync:cinesync /data
# /data: downloaded datasets (MovieLens 100K); compose mounts the `datasets` volume there
ENV CINESYNC_STORE_DIR=/store \
    CINESYNC_DATA_DIR=/data
USER cinesync
CMD ["cinesync", "train", "--model", "sasrec", "--dataset", "ml-latest-small", "--publish", "--store", "/store"]
