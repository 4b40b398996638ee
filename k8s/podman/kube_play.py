"""The rendered cpu overlay as something `podman kube play` runs on one machine, on loopback.

    kubectl kustomize k8s/overlays/cpu > out/k8s/cpu.yaml
    python k8s/podman/kube_play.py out/k8s/cpu.yaml --out out/k8s/podman [--port-offset 1000]
    CONTAINERS_CONF=... podman kube play out/k8s/podman/facedit.yaml
    ...
    podman kube down out/k8s/podman/facedit.yaml

podman kube play (4.3 here) runs Pods, Deployments and PersistentVolumeClaims; it has no Services,
NetworkPolicies, autoscalers, StatefulSets or Jobs, crashes on Secret volumes and ignores gRPC probes.
So the whole stack becomes one Pod `facedit` (one network namespace):

- every workload's containers (Redis, the four services, the publish-pack Job's container) and init
  containers, with volume names prefixed by the workload's name; the pod restarts failed containers
  only (restartPolicy OnFailure), so the publish container runs once;
- the Services' names (gateway, encoder, directions, generator, redis) are host aliases of 127.0.0.1,
  so the addresses, the Redis URL and the certificates' names stay those of the cluster;
- each service's metrics and health ports move apart (9100 + i, 8081 + i: they share one network
  namespace); only the gateway's gRPC port and those ports are published, on 127.0.0.1 (+ offset);
- Secret and ConfigMap volumes become hostPath folders under OUT/files (mode 0700, files 0644 so the
  services' uid 10001 reads them); environment from ConfigMaps and Secrets becomes literal values
  (facedit.yaml is written with mode 0600); the StatefulSet's volume claim becomes the named volume
  <pod>-redis-data, which podman makes when missing and keeps after `podman kube down` (Redis' AOF:
  `podman volume rm` it for an empty Redis);
- probes, node selectors, tolerations, spread constraints and CPU figures are dropped (memory
  limits stay);
- with --image-tag, the images built here (localhost/facedit-*) take that tag instead of the
  overlay's (make images IMAGE_TAG=...).

OUT/ports.json says where everything answers on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("check_manifests", HERE.parent / "check_manifests.py")
ck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ck)

POD = "facedit"
LOCAL_IMAGES = "localhost/facedit-"  # the images of `make images`
KEEP_CONTAINER = ("name", "image", "imagePullPolicy", "command", "args", "workingDir", "ports", "env",
                  "volumeMounts", "securityContext")
FIRST_METRICS, FIRST_HEALTH = 9100, 8081


def _ports(services: list[str]) -> dict[str, dict[str, int]]:
    return {s: {"metrics": FIRST_METRICS + i, "health": FIRST_HEALTH + i} for i, s in enumerate(services)}


def image_tag(text: str) -> str:
    """An image tag as podman takes it (argparse type)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", text):
        raise argparse.ArgumentTypeError(f"not an image tag: {text!r}")
    return text


def retag(image: str, tag: str | None) -> str:
    """localhost/facedit-<name>[:<tag>] with `tag` instead (other images, and tag None, unchanged)."""
    if not tag or not image.startswith(LOCAL_IMAGES):
        return image
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}:{tag}"


def convert(objs: list[dict], out: Path, port_offset: int = 0, pod_name: str = POD,
            image_tag: str | None = None) -> dict:
    """Write OUT/facedit.yaml, OUT/files/ and OUT/ports.json; returns the ports. image_tag: the tag of the
    localhost/facedit-* images (None: the overlay's)."""
    m = ck.Manifests(objs)
    for w in m.workloads():
        for c in ck._containers(m.pod(w)):
            if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {}):
                raise SystemExit(f"{ck.name(w)} asks for a GPU: render the cpu overlay for podman")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    files = out / "files"
    services = [s for s in ck.SERVICES if ("Deployment", s) in m.by]
    moved = _ports(services)
    published = {s: {"metrics": p["metrics"] + port_offset, "health": p["health"] + port_offset}
                 for s, p in moved.items()}
    aliases = sorted(o["metadata"]["name"] for o in m.of("Service"))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": pod_name, "labels": {"app.kubernetes.io/part-of": "facedit"}},
           "spec": {"restartPolicy": "OnFailure", "hostAliases": [{"ip": "127.0.0.1", "hostnames": aliases}],
                    "initContainers": [], "containers": [], "volumes": []}}
    security = None
    for w in sorted(m.workloads(), key=lambda w: (w["kind"] != "StatefulSet", w["kind"] == "Job")):
        wname, spec = w["metadata"]["name"], m.pod(w)["spec"]
        security = security or spec.get("securityContext")
        rename = {v["name"]: f"{wname}-{v['name']}" for v in spec.get("volumes", [])}
        for v in spec.get("volumes", []):
            pod["spec"]["volumes"].append(_volume(m, v, rename[v["name"]], files))
        for t in w["spec"].get("volumeClaimTemplates", []):  # podman makes the named volume when missing
            rename[t["metadata"]["name"]] = claim = f"{pod_name}-{wname}-{t['metadata']['name']}"
            pod["spec"]["volumes"].append({"name": claim, "persistentVolumeClaim": {"claimName": claim}})
        for kind in ("initContainers", "containers"):
            for c in spec.get(kind, []):
                pod["spec"][kind].append(_container(m, w, c, rename, moved, port_offset, image_tag))
    pod["spec"]["securityContext"] = {k: v for k, v in (security or {}).items() if k != "seccompProfile"}
    gateway_grpc = next(p["containerPort"] for c in pod["spec"]["containers"] if c["name"] == "gateway"
                        for p in c["ports"] if p["name"] == "grpc")
    published["gateway"]["grpc"] = gateway_grpc + port_offset
    text = yaml.safe_dump(pod, sort_keys=False)
    target = out / "facedit.yaml"
    target.touch(mode=0o600)
    target.write_text(text)
    (out / "ports.json").write_text(json.dumps(published, indent=2) + "\n")
    return published


def _volume(m: ck.Manifests, v: dict, new_name: str, files: Path) -> dict:
    for kind, field, ref in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
        if field in v:
            data = m.data(kind, v[field][ref]) or {}
            items = {i["key"]: i["path"] for i in v[field].get("items", [])} or {k: k for k in data}
            folder = files / new_name
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(files, 0o700)
            for key, rel in items.items():
                (folder / rel).write_text(data[key])
                os.chmod(folder / rel, 0o644)
            return {"name": new_name, "hostPath": {"path": str(folder.resolve()), "type": "Directory"}}
    if "emptyDir" in v:
        return {"name": new_name, "emptyDir": {}}
    raise SystemExit(f"volume {v['name']}: only Secret, ConfigMap and emptyDir volumes are converted")


def _container(m: ck.Manifests, w: dict, c: dict, rename: dict, moved: dict, port_offset: int,
               image_tag: str | None = None) -> dict:
    env = ck.environment(m, c)
    service = m.service_of(w) if c["name"] == m.service_of(w) else None
    if service is not None:
        env["FACEDIT_METRICS_PORT"] = str(moved[service]["metrics"])
        env["FACEDIT_HEALTH_PORT"] = str(moved[service]["health"])
    new = {k: copy.deepcopy(c[k]) for k in KEEP_CONTAINER if k in c}
    new["image"] = retag(new["image"], image_tag)
    for key in ("command", "args"):  # podman does not expand $(VAR) as the kubelet does
        if key in new:
            new[key] = [ck.expand(a, env) for a in new[key]]
    if "ports" in new:
        ports = []
        for p in new["ports"]:
            name = p.get("name")
            if service is not None and name in ("metrics", "health"):
                p = {**p, "containerPort": moved[service][name]}
            if service is not None and (name in ("metrics", "health") or (service == "gateway" and name == "grpc")):
                p = {**p, "hostPort": p["containerPort"] + port_offset, "hostIP": "127.0.0.1"}
            ports.append(p)
        new["ports"] = ports
    if env:
        new["env"] = [{"name": k, "value": v} for k, v in env.items()]
    new["volumeMounts"] = [{**vm, "name": rename[vm["name"]]} for vm in c.get("volumeMounts", [])]
    if w["kind"] == "Job" or c in m.pod(w)["spec"].get("initContainers", []):
        new["name"] = f"{w['metadata']['name']}-{c['name']}"
    memory = c.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        new["resources"] = {"limits": {"memory": memory}}
    return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rendered", help="`kubectl kustomize k8s/overlays/cpu` output, or - for stdin")
    p.add_argument("--out", required=True, help="folder for facedit.yaml, files/ and ports.json")
    p.add_argument("--port-offset", type=int, default=0, help="add this to every published port")
    p.add_argument("--name", default=POD, help="the pod's name (and its volume claim's prefix)")
    p.add_argument("--image-tag", type=image_tag, default=None, help=f"tag of the {LOCAL_IMAGES}* images (default: the overlay's)")
    args = p.parse_args(argv)
    text = sys.stdin.read() if args.rendered == "-" else Path(args.rendered).read_text()
    ports = convert([d for d in yaml.safe_load_all(text) if d], Path(args.out), args.port_offset, args.name,
                    args.image_tag)
    print(json.dumps(ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
