# facedit gateway service, CPU: python -m services.gateway.server (the public API).
# ONNX Runtime (cpu extra) and no torch; uid 10001; health: grpc.health.v1 on port 8081.
# Built by `make images` (docker/README.md): podman build --format docker --secret id=pipca,src=<CA bundle>
ARG BASE_IMAGE=localhost/debian-base:bookworm

# ---- builder: a venv with the pinned closure of facedit[cpu], the generated stubs, the project ----
# Identical in the four CPU service Dockerfiles (tests/unit/test_dockerfiles.py checks it), so
# podman builds it once and the four images share its layers.
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY docker/requirements/serving.txt /src/docker/requirements/serving.txt
# The proxy's CA bundle, when one is given, is a build secret: mounted for this step only, in no layer.
# ONNX Runtime: the cpu extra's pin (pyproject.toml); everything else from the lock (docker/lock.py).
RUN --mount=type=secret,id=pipca,required=false \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
 && pip install --no-deps --only-binary=:all: -r /src/docker/requirements/serving.txt onnxruntime==1.31.1 \
 && pip install --no-deps --only-binary=:all: --target /tmp/torchserve torchserve==0.12.0 \
 && pip check
COPY pyproject.toml /src/pyproject.toml
COPY protos /src/protos
COPY facedit_core /src/facedit_core
COPY facedit_faces /src/facedit_faces
COPY services /src/services
WORKDIR /src
# The stubs are generated, not in git (as `make stubs`); TorchServe's protos ship only in its jar
# (the generator's --backend torchserve client), extracted from the wheel unpacked above. Then the
# project (without training/ and bench/, which are not in this context) goes into the venv, and pip
# leaves it: the runtime stage has no installer.
RUN python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
        protos/facedit/v1/*.proto \
 && PYTHONPATH=/tmp/torchserve python -m services.generator.torchserve_protos /tmp/ts_protos \
 && python -m grpc_tools.protoc -I/tmp/ts_protos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
        /tmp/ts_protos/facedit/torchserve/status.proto /tmp/ts_protos/facedit/torchserve/inference.proto \
        /tmp/ts_protos/facedit/torchserve/management.proto \
 && pip install --no-deps --no-build-isolation --no-compile /src \
 && python -m compileall -q /opt/venv/lib \
 && python -m pip uninstall -y -q pip \
 && python -c "import services.common.server, facedit.v1.gateway_pb2_grpc, facedit.torchserve.inference_pb2_grpc"

# ---- runtime: Debian's python3 and the venv, nothing else ----
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin facedit \
 && mkdir -p /app /models && chown 10001:10001 /models
COPY --from=builder /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/facedit/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 \
    FACEDIT_HOST=0.0.0.0 FACEDIT_MODEL_STORE=/models FACEDIT_METRICS_PORT=9100 FACEDIT_HEALTH_PORT=8081 \
    FACEDIT_DEFAULT_PACK=digiface64 FACEDIT_ENCODER_ADDR=dns:///encoder:50051 \
    FACEDIT_DIRECTIONS_ADDR=dns:///directions:50052 FACEDIT_GENERATOR_ADDR=dns:///generator:50053
WORKDIR /app
USER 10001:10001
EXPOSE 50050 8081 9100
# Readiness (service ""): packs loaded and dependencies answering. Kubernetes ignores HEALTHCHECK:
# its probes use grpc port 8081, service "" (readiness) and "liveness" (docs/deploy-conventions.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/facedit/healthcheck.py"]
ENTRYPOINT ["python", "-m", "services.gateway.server"]
