# facedit TorchServe: the optional generator backend (python -m services.generator.server --backend
# torchserve). Meant as a sidecar of the generator in its pod: at start it exports the pack's .mar
# from the pack image's /models (python -m training.packs.torchserve_export), then runs TorchServe in
# the foreground with every port on 127.0.0.1 (gRPC inference 7070; docs/security.md: TorchServe is
# called in plaintext, keep it on the generator's loopback). Its Python worker imports torch, so this
# image carries torch (PyPI's build, with its CUDA libraries: several GB, not a slim serving image);
# the handler itself runs ONNX Runtime. Built by `make images-all`, not by `make images`.
ARG BASE_IMAGE=localhost/debian-base:bookworm

# ---- builder: a venv with the pinned closure of facedit[cpu,torchserve] + torch, the project ----
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY docker/requirements/torchserve.txt /src/docker/requirements/torchserve.txt
# The proxy's CA bundle, when one is given, is a build secret: mounted for this step only, in no layer.
RUN --mount=type=secret,id=pipca,required=false \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
 && pip install --no-deps --only-binary=:all: -r /src/docker/requirements/torchserve.txt onnxruntime==1.31.1 \
 && pip check
COPY pyproject.toml /src/pyproject.toml
COPY protos /src/protos
COPY facedit_core /src/facedit_core
COPY facedit_faces /src/facedit_faces
COPY services /src/services
COPY training /src/training
WORKDIR /src
RUN python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
        protos/facedit/v1/*.proto \
 && pip install --no-deps --no-build-isolation /src \
 && python -m pip uninstall -y -q pip \
 && python -c "import ts, model_archiver, training.packs.torchserve_export, services.generator.ts_handler"

# ---- runtime: Java for TorchServe's frontend, Debian's python3 and the venv ----
FROM ${BASE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless=17.0.19+10-1~deb12u2 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin facedit \
 && mkdir -p /app /models && chown 10001:10001 /models
COPY --from=builder /opt/venv /opt/venv
COPY docker/torchserve-entrypoint.sh /opt/facedit/torchserve-entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 \
    FACEDIT_MODEL_STORE=/models FACEDIT_PACK=digiface64 TS_WORKDIR=/tmp/torchserve TS_BATCH_SIZE=16 \
    TS_MAX_BATCH_DELAY_MS=5
WORKDIR /app
USER 10001:10001
EXPOSE 7070
# Healthy once the pack's model has a READY worker (its management API on 127.0.0.1:7081); a
# Kubernetes probe: exec of the same command.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/bin/sh", "/opt/facedit/torchserve-entrypoint.sh", "health"]
ENTRYPOINT ["/bin/sh", "/opt/facedit/torchserve-entrypoint.sh"]
