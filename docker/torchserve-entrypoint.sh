#!/bin/sh
# The torchserve image's entry point (docker/torchserve.Dockerfile): export the pack's generator as a
# .mar from the model store, then run TorchServe in the foreground on 127.0.0.1 only.
#   FACEDIT_MODEL_STORE (/models), FACEDIT_PACK (digiface64), TS_WORKDIR (/tmp/torchserve),
#   TS_BATCH_SIZE (16), TS_MAX_BATCH_DELAY_MS (5), TS_GRPC_PORT (7070)
#   torchserve-entrypoint.sh health   exit 0 when the model has a READY worker (the HEALTHCHECK): /ping says
#                                     Healthy before the worker has loaded, and gRPC answers only after it
set -eu
if [ "${1:-}" = health ]; then
    exec python -c '
import json, os, sys, urllib.request
name = os.environ.get("FACEDIT_PACK", "digiface64") + "-generator"
with urllib.request.urlopen(f"http://127.0.0.1:7081/models/{name}", timeout=4) as r:
    workers = [w for m in json.load(r) for w in m.get("workers", [])]
sys.exit(0 if any(w.get("status") == "READY" for w in workers) else 1)'
fi
store=${FACEDIT_MODEL_STORE:-/models}
pack=${FACEDIT_PACK:-digiface64}
work=${TS_WORKDIR:-/tmp/torchserve}
mkdir -p "$work/model-store" "$work/logs" "$work/tmp"
python -m training.packs.torchserve_export --pack-dir "$store/$pack" --out "$work/model-store" \
    --batch-size "${TS_BATCH_SIZE:-16}" --max-batch-delay-ms "${TS_MAX_BATCH_DELAY_MS:-5}"
cat > "$work/config.properties" <<CONF
inference_address=http://127.0.0.1:7080
management_address=http://127.0.0.1:7081
metrics_address=http://127.0.0.1:7082
grpc_inference_address=127.0.0.1
grpc_inference_port=${TS_GRPC_PORT:-7070}
grpc_management_address=127.0.0.1
grpc_management_port=7071
disable_token_authorization=true
disable_system_metrics=true
install_py_dep_per_model=false
default_workers_per_model=1
CONF
export TMPDIR="$work/tmp" LOG_LOCATION="$work/logs" METRICS_LOCATION="$work/logs"
exec torchserve --foreground --ncs --disable-token-auth --ts-config "$work/config.properties" \
    --model-store "$work/model-store" --models "$pack-generator=$pack-generator.mar"
