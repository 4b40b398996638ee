#!/usr/bin/env bash
# Runs the built images once and makes real edits through them, then removes everything it made.
#
#   bash docker/smoke.sh            (after make images; PACK=digiface64 TAG=dev by default)
#
# On a podman network of its own: the pack image as init (copies /packs into a fresh volume, mounted
# read-only at /models by the services), Redis with a password from a mounted file, the encoder,
# directions and generator services, and the gateway, published on 127.0.0.1 only (a free port, or
# SMOKE_PORT). Plaintext with FACEDIT_INSECURE=1 (no TLS, no tokens: this is a smoke run, not a
# deployment; docs/security.md). Checks: no torch in the serving images, every HEALTHCHECK passing,
# Redis refusing calls without its password with AOF and volatile-lru on, then three Edits through
# the host's Python client (.venv, stubs of make stubs): by seed, by a phrase (MiniLM from the pack
# image) and of a pack example face (through the encoder). Pictures go to out/smoke/.
# SMOKE_TORCHSERVE=1 (after make images-all) also runs the TorchServe image as the sidecar of a second
# generator with --backend torchserve and renders three latents through it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
PACK=${PACK:-digiface64}
TAG=${TAG:-dev}
PY=${PY:-.venv/bin/python}
OUT=${SMOKE_OUT:-out/smoke}
RUN=facedit-smoke-$$
PORT=${SMOKE_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
SERVICES="encoder directions generator gateway"
SECRETS=$(mktemp -d)
started=()

# podman here has no systemd, so it cannot time HEALTHCHECKs itself (the smoke runs them with
# `podman healthcheck run`): its complaint about that, on every run, is noise.
podman() { command podman "$@" 2> >(grep -v -e "unable to get systemd connection" -e "failed to connect to syslog" >&2); }
log() { printf '%s smoke: %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        for c in "${started[@]}"; do
            echo "---- logs of $c (last 30 lines) ----"
            podman logs --tail 30 "$c" 2>&1 || true
        done
    fi
    for c in "${started[@]}"; do podman rm -f -v -t 5 "$c" >/dev/null 2>&1 || true; done
    podman volume rm -f "$RUN-models" >/dev/null 2>&1 || true
    podman network rm -f "$RUN" >/dev/null 2>&1 || true
    rm -rf "$SECRETS"
    log "cleaned up (exit $rc)"
}
trap cleanup EXIT

for image in redis pack-"$PACK" $SERVICES $([ "${SMOKE_TORCHSERVE:-0}" = 1 ] && echo torchserve); do
    podman image exists "localhost/facedit-$image:$TAG" || { echo "localhost/facedit-$image:$TAG is missing: make images" >&2; exit 1; }
done

log "serving images carry no torch"
for s in $SERVICES; do
    podman run --rm --entrypoint python "localhost/facedit-$s:$TAG" -c '
import importlib.metadata as m, sys
names = {d.metadata["Name"].lower() for d in m.distributions()}
bad = names & {"torch", "torchvision", "torchserve", "facenet-pytorch", "onnxruntime-gpu", "pip"}
sys.exit(f"found {sorted(bad)}" if bad or "onnxruntime" not in names else 0)'
done

podman network create "$RUN" >/dev/null
podman volume create "$RUN-models" >/dev/null

log "pack init: localhost/facedit-pack-$PACK:$TAG -> volume $RUN-models"
podman run --rm --name "$RUN-pack" -v "$RUN-models:/models" "localhost/facedit-pack-$PACK:$TAG"

# the Redis password: a file readable by uid 10001 only, as a mounted secret would be
head -c 256 /dev/urandom | tr -dc A-Za-z0-9 | head -c 32 > "$SECRETS/redis-password"  # URL-safe: it goes into FACEDIT_REDIS_URL
chown 10001:10001 "$SECRETS/redis-password" && chmod 0400 "$SECRETS/redis-password"
REDIS_URL="redis://:$(cat "$SECRETS/redis-password")@redis:6379/0"

log "redis"
podman run -d --name "$RUN-redis" --network "$RUN" --network-alias redis \
    -v "$SECRETS/redis-password:/run/secrets/redis-password:ro" -e REDIS_PASSWORD_FILE=/run/secrets/redis-password \
    "localhost/facedit-redis:$TAG" >/dev/null
started+=("$RUN-redis")

for s in $SERVICES; do
    args=(--network "$RUN" --network-alias "$s" -v "$RUN-models:/models:ro" -e FACEDIT_INSECURE=1)
    case $s in
        directions) args+=(-e "FACEDIT_REDIS_URL=$REDIS_URL") ;;
        gateway) args+=(-e "FACEDIT_REDIS_URL=$REDIS_URL" -p "127.0.0.1:$PORT:50050") ;;
    esac
    log "$s"
    podman run -d --name "$RUN-$s" "${args[@]}" "localhost/facedit-$s:$TAG" >/dev/null
    started+=("$RUN-$s")
done

log "waiting for every HEALTHCHECK (readiness: packs loaded, dependencies answering)"
deadline=$((SECONDS + ${SMOKE_TIMEOUT_S:-180}))
for c in "${started[@]}"; do
    until podman healthcheck run "$c" >/dev/null 2>&1; do
        if [ "$(podman inspect -f '{{.State.Running}}' "$c")" != true ]; then echo "$c stopped" >&2; exit 1; fi
        if [ $SECONDS -ge $deadline ]; then echo "$c not healthy in time" >&2; exit 1; fi
        sleep 2
    done
    log "$c healthy"
done

log "redis: a password is required, AOF is on, volatile-lru"
podman exec "$RUN-redis" redis-cli ping 2>&1 | grep -q NOAUTH || { echo "redis answered without a password" >&2; exit 1; }
podman exec "$RUN-redis" sh -c 'REDISCLI_AUTH=$(cat /run/secrets/redis-password) redis-cli config get appendonly' \
    | grep -qx yes || { echo "redis: appendonly is not on" >&2; exit 1; }
podman exec "$RUN-redis" sh -c 'REDISCLI_AUTH=$(cat /run/secrets/redis-password) redis-cli config get maxmemory-policy' \
    | grep -qx volatile-lru || { echo "redis: maxmemory-policy is not volatile-lru" >&2; exit 1; }

mkdir -p "$OUT"
client=("$PY" -m services.client --address "127.0.0.1:$PORT" --timeout 60)
log "Edit: seed 7, smile=1.5, keep yaw"
"${client[@]}" edit --seed 7 --edit smile=1.5 --keep yaw --out "$OUT/edit_seed7.png"
log "Edit: the phrase \"a big grin\" (words method: MiniLM from the pack image)"
"${client[@]}" edit --seed 7 --text '"a big grin"=1.5' --out "$OUT/edit_phrase.png"
log "Edit: a pack example face through the encoder"
"${client[@]}" edit --image "model_store/$PACK/examples/face_1.png" --edit smile=1.5 --out "$OUT/edit_face1.png"
podman logs "$RUN-directions" 2>&1 | grep -q "no sentence encoder" && { echo "directions ran without MiniLM" >&2; exit 1; }
if [ "${SMOKE_TORCHSERVE:-0}" = 1 ]; then
    # The TorchServe image as the generator's sidecar: one network namespace (a pod's), TorchServe on
    # its loopback, a second generator with --backend torchserve beside it, called from inside.
    log "torchserve sidecar (make images-all): .mar exported from the pack volume at start"
    podman run -d --name "$RUN-torchserve" --network "$RUN" -v "$RUN-models:/models:ro" \
        "localhost/facedit-torchserve:$TAG" >/dev/null
    started+=("$RUN-torchserve")
    wait_healthy() {
        until podman healthcheck run "$1" >/dev/null 2>&1; do
            if [ "$(podman inspect -f '{{.State.Running}}' "$1")" != true ]; then echo "$1 stopped" >&2; exit 1; fi
            if [ $SECONDS -ge $((deadline + 240)) ]; then echo "$1 not healthy in time" >&2; exit 1; fi
            sleep 3
        done
        log "$1 healthy"
    }
    wait_healthy "$RUN-torchserve"
    # Started once TorchServe serves: a generator started earlier would only stay NOT_SERVING until
    # TorchServe renders for it (its readiness renders one latent through TorchServe first).
    podman run -d --name "$RUN-generator-ts" --network "container:$RUN-torchserve" -v "$RUN-models:/models:ro" \
        -e FACEDIT_HOST=127.0.0.1 -e FACEDIT_BACKEND=torchserve -e FACEDIT_TORCHSERVE_ADDRESS=127.0.0.1:7070 \
        "localhost/facedit-generator:$TAG" >/dev/null
    started+=("$RUN-generator-ts")
    wait_healthy "$RUN-generator-ts"
    podman exec "$RUN-generator-ts" python -c '
import grpc, numpy as np
from facedit.v1 import generator_pb2, generator_pb2_grpc
from services.common.tensors import from_tensor, to_tensor
z = np.random.default_rng(7).standard_normal((3, 100)).astype(np.float32)
with grpc.insecure_channel("127.0.0.1:50053") as ch:
    r = generator_pb2_grpc.GeneratorStub(ch).GenerateImages(
        generator_pb2.GenerateImagesRequest(pack="digiface64", latents=to_tensor(z)), timeout=60)
px = from_tensor(r.pixels)
assert px.shape == (3, 64, 64, 3) and px.dtype == np.uint8 and px.std() > 1, (px.shape, px.dtype)
print("torchserve backend: 3 latents ->", px.shape, "pixels, TorchServe batch", r.batch_size)'
fi

log "podman ps:"
podman ps --filter "name=$RUN" --format '{{.Names}}\t{{.Status}}'
log "OK: the stack in images answered on 127.0.0.1:$PORT; pictures in $OUT/"
