#!/usr/bin/env bash
# The cpu overlay as one podman pod on 127.0.0.1 (k8s/podman/kube_play.py says what changes on the way).
#   k8s/podman/play.sh up   [--name facedit] [--port-offset N] [--image-tag dev]
#                           render, convert, podman kube play, wait until every service is SERVING; prints
#                           ports.json (--image-tag: run localhost/facedit-*:<tag>, of make images IMAGE_TAG=<tag>)
#   k8s/podman/play.sh down [--name facedit] [--fresh]    podman kube down (--fresh: Redis' volume too)
#   k8s/podman/play.sh logs [--name facedit]              each container's state; the last LOG_LINES (40) lines
#                           of those that exited with an error or restarted, or of all when none did
# Needs the images of `make images` (localhost/facedit-*:dev), kubectl (make kubectl), .venv (make setup).
# Files go to out/k8s-podman/<name>/ (secrets included: mode 0700). PODMAN_CONF: the containers.conf used
# (default docker/containers.conf when it exists: runc, cgroupfs, lower ulimits on this kind of machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmd=${1:-}; shift || true
name=facedit; offset=0; fresh=0; tag=
while [ $# -gt 0 ]; do
    case "$1" in
        --name) name=$2; shift 2 ;;
        --port-offset) offset=$2; shift 2 ;;
        --image-tag) tag=$2; shift 2 ;;
        --fresh) fresh=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
conf=${PODMAN_CONF:-docker/containers.conf}
if [ -f "$conf" ]; then export CONTAINERS_CONF="$PWD/$conf"; fi
out=out/k8s-podman/$name
PY=.venv/bin/python
mkdir -p "$out" && chmod 700 "$out"
# podman's stderr goes to a file first: containers it starts inherit the descriptor, so a pipe there would
# never close; without systemd it repeats complaints about it, and about init containers it removed
podman() {
    local rc=0
    command podman "$@" 2> "$out/podman.err" || rc=$?
    grep -v -e "unable to get systemd connection" -e "failed to connect to syslog" \
        -e "Removing container .* from database" "$out/podman.err" >&2 || true
    return $rc
}

case "$cmd" in
up)
    kubectl=$(command -v kubectl || echo build/kubectl/kubectl)
    [ -s k8s/components/secrets/generated/tokens.json ] || sh k8s/generate-secrets.sh
    "$kubectl" kustomize k8s/overlays/cpu > "$out/cpu.yaml"
    $PY k8s/podman/kube_play.py "$out/cpu.yaml" --out "$out" --port-offset "$offset" --name "$name" \
        ${tag:+--image-tag "$tag"} >/dev/null
    start=$SECONDS
    podman kube play "$out/facedit.yaml" >/dev/null
    echo "podman kube play: $((SECONDS - start)) s"
    # kube play ignores gRPC probes: ask each service's plaintext health port until it is SERVING
    $PY - "$out/ports.json" "$name" <<'PY'
import json, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ports, pod = json.load(open(sys.argv[1])), sys.argv[2]
t0 = time.monotonic()
deadline, waiting = t0 + 300, dict(ports)
while waiting and time.monotonic() < deadline:
    for name, p in list(waiting.items()):
        with grpc.insecure_channel(f"127.0.0.1:{p['health']}") as ch:
            try:
                if health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    del waiting[name]
                    print(f"{name} SERVING after {time.monotonic() - t0:.1f} s", flush=True)
            except grpc.RpcError:
                pass
    time.sleep(1)
if waiting:
    sys.exit(f"not SERVING after 300 s: {sorted(waiting)} (podman logs {pod}-<service>; k8s/podman/play.sh logs)")
print(json.dumps(ports))
PY
    echo "gateway: 127.0.0.1:$($PY -c "import json; print(json.load(open('$out/ports.json'))['gateway']['grpc'])")" \
         "(TLS: --tls-ca k8s/components/tls-files/generated/ca.crt; tokens in k8s/components/secrets/generated/client-tokens.txt)"
    ;;
down)
    [ -f "$out/facedit.yaml" ] && podman kube down "$out/facedit.yaml" >/dev/null || true
    if [ "$fresh" = 1 ]; then podman volume rm -f "$name-redis-data" >/dev/null || true; fi
    ;;
logs)
    # init containers are removed once they succeed: what is left is the pod's containers and failed inits
    states=$(for c in $(command podman ps -a --filter "pod=$name" --format '{{.Names}}' 2>/dev/null); do
        command podman inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' "$c" 2>/dev/null
    done | grep -v -e '-infra ' || true)
    if [ -z "$states" ]; then echo "no containers of pod $name"; exit 0; fi
    echo "containers of pod $name (name, state, exit code, restarts):"
    echo "$states" | sed 's/^/  /'
    failing=$(echo "$states" | awk '($2 != "running" && $3 != 0) || $4 > 0 {print $1}')
    for c in ${failing:-$(echo "$states" | awk '{print $1}')}; do
        echo "---- podman logs --tail ${LOG_LINES:-40} $c ----"
        command podman logs --tail "${LOG_LINES:-40}" "$c" 2>&1 || true
    done
    ;;
*)
    echo "usage: k8s/podman/play.sh up|down|logs [--name NAME] [--port-offset N] [--image-tag TAG] [--fresh]" >&2
    exit 2 ;;
esac
