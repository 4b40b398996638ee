# facedit generator service, CUDA: python -m services.generator.server (latents -> images) on onnxruntime-gpu
# (the gpu extra; never together with onnxruntime) on an NVIDIA CUDA runtime image with cuDNN.
# Linted, NOT built on the development machines: no image can be pulled there (docker/README.md).
# onnxruntime-gpu 1.31.1 is built for CUDA 13 and cuDNN 9 (its wheel's metadata), hence the base.
# The project needs Python 3.11 and Ubuntu 24.04 ships 3.12, so the interpreter comes from the
# official python image (glibc 2.36 there, 2.39 in Ubuntu 24.04: forward compatible).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- builder: a venv with the pinned closure of facedit[gpu] and the generated stubs ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/requirements/serving.txt /src/docker/requirements/serving.txt
# The proxy's CA bundle, when one is given, is a build secret: mounted for this step only, in no layer.
RUN --mount=type=secret,id=pipca,required=false \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
 && pip install --no-deps --only-binary=:all: -r /src/docker/requirements/serving.txt onnxruntime-gpu==1.31.1 \
 && pip check
COPY pyproject.toml /src/pyproject.toml
COPY protos /src/protos
COPY facedit_core /src/facedit_core
COPY facedit_faces /src/facedit_faces
COPY services /src/services
WORKDIR /src
RUN python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
        protos/facedit/v1/*.proto \
 && pip install --no-deps --no-build-isolation --no-compile /src \
 && python -m compileall -q /opt/venv/lib \
 && python -m pip uninstall -y -q pip \
 && python -c "import services.common.server, facedit.v1.gateway_pb2_grpc, onnxruntime"

# ---- runtime: CUDA + cuDNN, the interpreter and the venv ----
FROM ${CUDA_IMAGE}
# The shared libraries the official image's interpreter links (it ships none of them in /usr/local).
# Unpinned: the versions of the CUDA image's Ubuntu could not be looked up here (nothing of it can be
# pulled); pin them where the image is built. So DL3008 (pin apt versions) is waived for this step:
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libexpat1 libffi8 libssl3t64 libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libuuid1 \
        ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin facedit \
 && mkdir -p /app /models && chown 10001:10001 /models
COPY --from=builder /usr/local/bin/python3.11 /usr/local/bin/python3.11
COPY --from=builder /usr/local/lib/libpython3.11.so.1.0 /usr/local/lib/libpython3.11.so.1.0
COPY --from=builder /usr/local/lib/python3.11 /usr/local/lib/python3.11
RUN ldconfig && ln -s python3.11 /usr/local/bin/python3 && ln -s python3.11 /usr/local/bin/python
COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/facedit/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 \
    FACEDIT_HOST=0.0.0.0 FACEDIT_MODEL_STORE=/models FACEDIT_METRICS_PORT=9100 FACEDIT_HEALTH_PORT=8081 \
    FACEDIT_PACKS=digiface64
WORKDIR /app
USER 10001:10001
EXPOSE 50053 8081 9100
# Readiness (service ""): packs loaded. Kubernetes ignores HEALTHCHECK: its probes use grpc port 8081,
# service "" (readiness) and "liveness" (docs/deploy-conventions.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/facedit/healthcheck.py"]
ENTRYPOINT ["python", "-m", "services.generator.server"]
