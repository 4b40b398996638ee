#!/usr/bin/env bash
# make deploy-test (after make images): the cpu overlay as a podman pod of its own, a client edit through the
# gateway container over TLS with a token (k8s/podman/deploy_check.py), then everything removed, also when a
# step failed. Prints each phase's time; on a failure, the state of every container and the logs of the
# failing ones.
#   DEPLOY_NAME (facedit-deploytest): the pod's name (and of its Redis volume, <name>-redis-data)
#   DEPLOY_PORT_OFFSET (11000): added to the published ports: the gateway on 127.0.0.1:61050, health
#       19081-19084 and metrics 20100-20103; none in the kernel's ephemeral range (32768-60999), nor where
#       k8s/podman/play.sh up (offset 0) or make run listen
#   IMAGE_TAG (dev): the images' tag (make images IMAGE_TAG=...)
#   DEPLOY_CHECK_ARGS: more flags for deploy_check.py (e.g. --seed 7)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${DEPLOY_NAME:-facedit-deploytest}
offset=${DEPLOY_PORT_OFFSET:-11000}
tag=${IMAGE_TAG:-dev}
PY=${PY:-.venv/bin/python}
out=out/k8s-podman/$name
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/docker/containers.conf}
t_start=$SECONDS
phases=()
phase() {  # phase LABEL COMMAND...: run it, note its time
    local label=$1 t0=$SECONDS rc=0; shift
    echo "== deploy-test: $label"
    "$@" || rc=$?
    if [ "$rc" = 0 ]; then phases+=("$label $((SECONDS - t0)) s"); else phases+=("$label FAILED after $((SECONDS - t0)) s"); fi
    return "$rc"
}

for image in redis gateway encoder directions generator pack-digiface64; do
    podman image exists "localhost/facedit-$image:$tag" || {
        echo "localhost/facedit-$image:$tag is missing: make images IMAGE_TAG=$tag" >&2; exit 1; }
done
# Someone else's run (or a stale one: k8s/podman/play.sh down --name NAME --fresh) is never torn down here.
if podman pod exists "$name" 2>/dev/null; then
    echo "a pod $name exists already (another deploy-test running?): remove it with" \
         "k8s/podman/play.sh down --name $name --fresh, or set DEPLOY_NAME" >&2
    exit 1
fi
podman volume rm -f "$name-redis-data" >/dev/null 2>&1 || true  # a stale run's Redis: start empty

finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        echo "== deploy-test FAILED (exit $rc): the pod's containers"
        bash k8s/podman/play.sh logs --name "$name" || true
    fi
    local t0=$SECONDS
    bash k8s/podman/play.sh down --name "$name" --fresh || echo "deploy-test: play.sh down failed" >&2
    rm -rf "$out"  # holds the generated secrets in plain files
    phases+=("down $((SECONDS - t0)) s")
    echo "== deploy-test $([ "$rc" = 0 ] && echo passed || echo FAILED): ${phases[*]/%/;} total $((SECONDS - t_start)) s"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

phase up bash k8s/podman/play.sh up --name "$name" --port-offset "$offset" --image-tag "$tag"

check_containers() {
    # what the manifests ask of every service container, as podman runs them: read-only root, uid 10001
    local c ro user bad=0
    for c in gateway encoder directions generator; do
        ro=$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$name-$c")
        user=$(podman inspect -f '{{.Config.User}}' "$name-$c")
        echo "$name-$c: read-only root $ro, user $user"
        if [ "$ro" != true ] || [ "${user%%:*}" != 10001 ]; then bad=1; fi
    done
    [ "$bad" = 0 ] || { echo "a service container runs with a writable root or not as uid 10001" >&2; return 1; }
    # the publish-pack Job's container: LoadPack as admin over mTLS, retried until the directions service serves
    local job=$name-publish-pack-publish state deadline=$((SECONDS + 120))
    until state=$(podman inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$job") && [ "${state%% *}" = exited ]; do
        [ $SECONDS -lt $deadline ] || { echo "$job has not finished after 120 s ($state)" >&2; return 1; }
        sleep 1
    done
    [ "$state" = "exited 0" ] || { echo "$job failed ($state)" >&2; return 1; }
    echo "$job: exited 0 ($(podman logs "$job" 2>&1 | tail -n 1))"
}
phase containers check_containers

port=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['gateway']['grpc'])" "$out/ports.json")
# shellcheck disable=SC2086  # DEPLOY_CHECK_ARGS: several flags
phase check "$PY" k8s/podman/deploy_check.py --address "127.0.0.1:$port" --out "out/deploy-test" ${DEPLOY_CHECK_ARGS:-}
