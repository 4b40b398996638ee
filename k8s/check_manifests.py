"""Offline checks of the Kubernetes manifests: render an overlay, validate every object against the
Kubernetes API schemas, and check what a schema cannot see (tests/unit/test_k8s.py runs them all).

    .venv/bin/python k8s/check_manifests.py k8s/overlays/cpu k8s/overlays/gpu

- schemas: kubernetes-validate --strict for every version in VERSIONS (cert-manager's custom
  resources have no bundled schema);
- cross-references: selectors match pod labels; Services, PDBs, NetworkPolicies select pods; HPAs
  scale Deployments; ConfigMaps and Secrets referenced exist with their keys (a Certificate counts
  as its Secret); every object in the overlay's namespace;
- the services' flags: each service container's environment parsed by that service's own parser
  (services/<name>/server.py): container ports, gRPC probes, TLS and token files in mounted Secrets,
  addresses resolving to headless Services of the right service and port, Redis password, pack image;
- NetworkPolicies: what they allow, evaluated over every pod template and a few outside peers, is
  exactly the calls the services make (read from the same parsed flags);
- pods: non-root, read-only root filesystem, no privilege escalation, capabilities dropped, requests
  and limits; in the GPU overlay one nvidia.com/gpu, node selector, toleration, -cuda images.

Every check returns a list of problems (empty: fine); check() runs them all.
"""
from __future__ import annotations

import base64
import contextlib
import importlib
import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
NAMESPACE = "facedit"
SERVICES = ("gateway", "encoder", "directions", "generator")
GRPC_NAME = {s: f"facedit.v1.{s.capitalize()}" for s in SERVICES}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# peers outside the namespace: (name, namespace labels or None for an address outside the cluster, pod labels)
OUTSIDE = (("internet", None, {}),
           ("another namespace", {"kubernetes.io/metadata.name": "elsewhere"}, {"app": "x"}),
           ("prometheus", {"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"}),
           ("kube-dns", {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}))
EXPECTED_FROM_OUTSIDE = {("gateway", "TCP", 50050)}  # into the namespace from any peer outside it
EXPECTED_PROMETHEUS = {(s, "TCP", 9100) for s in SERVICES}  # and from Prometheus
EXPECTED_EGRESS = {"kube-dns": (("UDP", 53), ("TCP", 53))}  # out of the namespace, from every pod
EGRESS_PROBES = (("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 4317), ("TCP", 6379), ("TCP", 50050))


def kubectl() -> str:
    """kubectl on PATH, else the one `make kubectl` puts in build/kubectl/ (FileNotFoundError: neither)."""
    found = shutil.which("kubectl") or (str(ROOT / "build/kubectl/kubectl")
                                        if (ROOT / "build/kubectl/kubectl").exists() else None)
    if not found:
        raise FileNotFoundError("no kubectl on PATH nor in build/kubectl/: run `make kubectl`")
    return found


def render(overlay: Path) -> list[dict]:
    """The objects of `kubectl kustomize overlay` (CalledProcessError with kustomize's message)."""
    out = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def name(obj: dict) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def validate(objs: list[dict], versions=VERSIONS) -> list[str]:
    """kubernetes-validate --strict of every object for every version (custom resources skipped)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    problems = []
    for v in versions:
        for obj in objs:
            if obj["apiVersion"].split("/")[0].endswith("cert-manager.io"):
                continue  # a custom resource: no schema bundled
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except SchemaNotFoundError as err:
                problems.append(f"{v}: {name(obj)}: {err.message}")
            except kubernetes_validate.ValidationError as err:
                where = "/".join(str(p) for p in err.path)
                problems.append(f"{v}: {name(obj)}: {where}: {err.message}")
    return problems


class Manifests:
    """The rendered objects, indexed."""

    def __init__(self, objs: list[dict]):
        self.objs = objs
        self.by = {(o["kind"], o["metadata"]["name"]): o for o in objs}

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objs if o["kind"] == kind]

    def workloads(self) -> list[dict]:
        return [o for o in self.objs if o["kind"] in WORKLOADS]

    @staticmethod
    def pod(workload: dict) -> dict:
        return workload["spec"]["template"]

    def data(self, kind: str, obj_name: str) -> dict[str, str] | None:
        """A ConfigMap's or Secret's data as text (None: no such object; a Certificate's Secret:
        its three keys with empty values)."""
        obj = self.by.get((kind, obj_name))
        if obj is None and kind == "Secret":
            cert = next((c for c in self.of("Certificate") if c["spec"].get("secretName") == obj_name), None)
            return None if cert is None else {"tls.crt": "", "tls.key": "", "ca.crt": ""}
        if obj is None:
            return None
        out = dict(obj.get("stringData") or {})
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v).decode(errors="replace") if kind == "Secret" else v
        return out

    def service_of(self, workload: dict) -> str | None:
        """The facedit service a workload runs (its container named after one), or None."""
        names = {c["name"] for c in self.pod(workload)["spec"]["containers"]}
        found = [s for s in SERVICES if s in names and workload["kind"] == "Deployment"]
        return found[0] if found else None


def matches(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; {} matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, value, values = e["key"] in labels, labels.get(e["key"]), e.get("values") or []
        ok = {"In": has and value in values, "NotIn": not has or value not in values,
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def check_namespace(m: Manifests) -> list[str]:
    return [f"{name(o)} is in namespace {o['metadata'].get('namespace')!r}, not {NAMESPACE!r}"
            for o in m.objs if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE]


def check_selectors(m: Manifests) -> list[str]:
    problems = []
    pods = [(w, m.pod(w)["metadata"].get("labels") or {}) for w in m.workloads()]
    for w in m.workloads():
        sel = w["spec"].get("selector")
        if w["kind"] != "Job" and not matches(sel, m.pod(w)["metadata"].get("labels") or {}):
            problems.append(f"{name(w)}: its selector {sel} does not match its pod labels")
    for svc in m.of("Service"):
        sel = svc["spec"].get("selector")
        if not sel or not any(matches({"matchLabels": sel}, labels) for _, labels in pods):
            problems.append(f"Service {svc['metadata']['name']}: its selector {sel} selects no pod")
    for kind, field in (("PodDisruptionBudget", "selector"), ("NetworkPolicy", "podSelector")):
        for o in m.of(kind):
            if not any(matches(o["spec"][field], labels) for _, labels in pods):
                problems.append(f"{name(o)}: its {field} selects no pod")
    for hpa in m.of("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in m.by:
            problems.append(f"{name(hpa)} scales {ref['kind']} {ref['name']}, which does not exist")
    for pdb in m.of("PodDisruptionBudget"):
        for w, labels in pods:
            hpa = m.by.get(("HorizontalPodAutoscaler", w["metadata"]["name"]))
            low = hpa["spec"].get("minReplicas", 1) if hpa else w["spec"].get("replicas", 1)
            if matches(pdb["spec"]["selector"], labels) and pdb["spec"].get("minAvailable", 0) >= low:
                problems.append(f"{name(pdb)}: minAvailable {pdb['spec']['minAvailable']} blocks every eviction "
                                f"of {name(w)} ({low} replicas)")
    return problems


def _containers(pod: dict) -> list[dict]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def check_references(m: Manifests) -> list[str]:
    """Every ConfigMap and Secret a pod refers to exists and has the keys it names."""
    problems = []

    def need(where: str, kind: str, obj_name: str, key: str | None, optional: bool = False):
        data = m.data(kind, obj_name)
        if data is None:
            if not optional:
                problems.append(f"{where}: {kind} {obj_name} does not exist")
        elif key is not None and key not in data:
            problems.append(f"{where}: {kind} {obj_name} has no key {key!r} (it has {sorted(data)})")

    for w in m.workloads():
        pod = m.pod(w)
        for v in pod["spec"].get("volumes", []):
            for kind, field, ref in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                if field in v:
                    src = v[field]
                    keys = [i["key"] for i in src.get("items", [])] or [None]
                    for k in keys:
                        need(f"{name(w)} volume {v['name']}", kind, src[ref], k, src.get("optional", False))
        for c in _containers(pod):
            where = f"{name(w)} container {c['name']}"
            for e in c.get("envFrom", []):
                for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if field in e:
                        need(where, kind, e[field]["name"], None, e[field].get("optional", False))
            for e in c.get("env", []):
                src = e.get("valueFrom", {})
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if field in src:
                        need(f"{where} env {e['name']}", kind, src[field]["name"], src[field]["key"],
                             src[field].get("optional", False))
    return problems


def environment(m: Manifests, c: dict) -> dict[str, str]:
    """A container's environment as the kubelet makes it ($(VAR) expanded)."""
    env: dict[str, str] = {}
    for e in c.get("envFrom", []):
        if "configMapRef" in e:
            env.update(m.data("ConfigMap", e["configMapRef"]["name"]) or {})
        if "secretRef" in e:
            env.update(m.data("Secret", e["secretRef"]["name"]) or {})
    for e in c.get("env", []):
        src = e.get("valueFrom", {})
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
        for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if field in src:
                env[e["name"]] = (m.data(kind, src[field]["name"]) or {}).get(src[field]["key"], "")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda g: env.get(g.group(1), g.group(0)), text)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("FACEDIT_")]:
            del os.environ[k]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_flags(service: str, env: dict[str, str], argv: list[str]) -> tuple[object, set[str]]:
    """The service's parsed flags under this environment, and the FACEDIT_* variables its parser reads."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from services.common import config

    module = importlib.import_module(f"services.{service}.server")
    asked: set[str] = set()
    real = config.env

    def spy(flag: str, default: str) -> str:
        asked.add(f"FACEDIT_{flag.upper().replace('-', '_')}")
        return real(flag, default)

    config.env = spy
    try:
        with _environ(env):
            args = module.parser().parse_args(argv)
    finally:
        config.env = real
    return args, asked


def _mounted(pod: dict, c: dict, path: str) -> tuple[str, str, str, str] | None:
    """(kind, name, key, mountPath) of the Secret or ConfigMap file at `path` in container c, ("emptyDir",
    "", "", mountPath) for a file under another volume, None when no volume is mounted there."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    for vm in sorted(c.get("volumeMounts", []), key=lambda vm: -len(vm["mountPath"])):
        prefix = vm["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        rest, vol = path[len(prefix):], volumes.get(vm["name"], {})
        for kind, field, ref in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if field in vol:
                items = {i["path"]: i["key"] for i in vol[field].get("items", [])}
                return kind, vol[field][ref], items.get(rest, rest if not items else ""), vm["mountPath"]
        return "emptyDir", "", "", vm["mountPath"]
    return None


def _file_in_mounts(m: Manifests, pod: dict, c: dict, path: str) -> str | None:
    """None when `path` is a key of a Secret or ConfigMap mounted in c (or under another volume), else why not."""
    got = _mounted(pod, c, path)
    if got is None:
        return f"{path} is in no mounted volume"
    kind, obj, key, mount = got
    if kind != "emptyDir" and key not in (m.data(kind, obj) or {}):
        return f"{path}: {kind} {obj} (mounted at {mount}) has no key {path[len(mount.rstrip('/')) + 1:]!r}"
    return None


def _resolve_target(m: Manifests, address: str, scheme: str) -> tuple[dict, dict, int] | str:
    """(workload, container, port) an address reaches through its Service, or why it does not."""
    host, port = address.rsplit(":", 1) if ":" in address else (address, "")
    svc = m.by.get(("Service", host))
    if svc is None:
        return f"{address}: no Service {host}"
    sp = next((p for p in svc["spec"]["ports"] if str(p["port"]) == port), None)
    if sp is None:
        return f"{address}: Service {host} has no port {port}"
    if scheme == "dns" and svc["spec"].get("clusterIP") != "None":
        return f"{address}: Service {host} is not headless (clusterIP: None): round_robin would see one address"
    target = sp.get("targetPort", sp["port"])
    for w in m.workloads():
        pod = m.pod(w)
        if not matches({"matchLabels": svc["spec"].get("selector") or {"-": "-"}}, pod["metadata"].get("labels", {})):
            continue
        for c in pod["spec"]["containers"]:
            for p in c.get("ports", []):
                if p["containerPort"] == target or p.get("name") == target:
                    return w, c, p["containerPort"]
    return f"{address}: Service {host} targets port {target}, which no container it selects has"


def calls(m: Manifests) -> tuple[set[tuple[str, str, str, int]], list[str]]:
    """The connections the services make, read from their parsed flags: (from, to, protocol, port)."""
    made, problems = set(), []
    for w in m.workloads():
        pod = m.pod(w)
        service, src = m.service_of(w), w["metadata"]["name"]
        for c in pod["spec"]["containers"]:
            env = environment(m, c)
            targets = []
            if service is not None and c["name"] == service:
                args, _ = parse_flags(service, env, [expand(a, env) for a in c.get("args", [])])
                for hop in ("encoder", "directions", "generator"):
                    if service == "gateway":
                        targets.append((getattr(args, hop), hop))
                if getattr(args, "redis_url", None):
                    u = urlsplit(args.redis_url)
                    targets.append((f"{u.hostname}:{u.port or 6379}", "redis"))
            argv = [expand(a, env) for a in c.get("args", [])]
            if "--address" in argv:  # the publish-pack Job
                targets.append((argv[argv.index("--address") + 1], "directions"))
            for address, want in targets:
                scheme = "dns" if address.startswith("dns:///") else "plain"
                got = _resolve_target(m, address.removeprefix("dns:///"), scheme)
                if isinstance(got, str):
                    problems.append(f"{name(w)} calls {got}")
                    continue
                tw, tc, port = got
                if tc["name"] != want:
                    problems.append(f"{name(w)} calls {address}, which reaches {name(tw)} container {tc['name']}, "
                                    f"not {want}")
                made.add((src, tw["metadata"]["name"], "TCP", port))
    return made, problems


def check_services(m: Manifests) -> list[str]:
    """Each service container against its own parser: ports, probes, files, addresses, Redis, pack."""
    problems = []
    redis_password = (m.data("Secret", "facedit-redis") or {}).get("password")
    seen = set()
    for w in m.workloads():
        service = m.service_of(w)
        if service is None:
            continue
        seen.add(service)
        pod = m.pod(w)
        c = next(c for c in pod["spec"]["containers"] if c["name"] == service)
        where = f"{name(w)} container {service}"
        env = environment(m, c)
        args, asked = parse_flags(service, env, [expand(a, env) for a in c.get("args", [])])
        unknown = sorted(k for k in env if k.startswith("FACEDIT_") and k not in asked)
        if unknown:
            problems.append(f"{where}: {unknown} are no settings of the {service} service")
        if args.host != "0.0.0.0":
            problems.append(f"{where}: listens on {args.host}, not 0.0.0.0")
        cports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for port_name, value in (("grpc", args.port), ("metrics", args.metrics_port), ("health", args.health_port)):
            if not value:
                problems.append(f"{where}: serves no {port_name} port (its flag is 0)")
            if cports.get(port_name) != value:
                problems.append(f"{where}: container port {port_name} is {cports.get(port_name)}, the service "
                                f"listens on {value}")
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/port") != str(args.metrics_port):
            problems.append(f"{where}: prometheus.io/port {ann.get('prometheus.io/port')} is not the metrics port "
                            f"{args.metrics_port}")
        for kind, want in (("readinessProbe", {"", GRPC_NAME[service]}), ("livenessProbe", {"liveness"})):
            probe = (c.get(kind) or {}).get("grpc")
            if probe is None:
                problems.append(f"{where}: no gRPC {kind}")
                continue
            port = probe["port"]
            if port != args.health_port:
                problems.append(f"{where}: {kind} asks port {port}, the plaintext health port is {args.health_port}")
            if probe.get("service", "") not in want:
                problems.append(f"{where}: {kind} asks health of {probe.get('service', '')!r}, want one of "
                                f"{sorted(want)}")
        files = ["tls_cert", "tls_key"] + (["tokens_file", "internal_ca", "internal_cert", "internal_key"]
                                           if service == "gateway" else ["tls_client_ca"])
        for flag in files:
            value = getattr(args, flag)
            if not value:
                problems.append(f"{where}: --{flag.replace('_', '-')} is not set (docs/security.md)")
            elif (why := _file_in_mounts(m, pod, c, value)) is not None:
                problems.append(f"{where}: --{flag.replace('_', '-')} {why}")
        if args.insecure:
            problems.append(f"{where}: --insecure is on")
        if getattr(args, "redis_url", None) and urlsplit(args.redis_url).password != redis_password:
            problems.append(f"{where}: the Redis URL's password is not the password of Secret facedit-redis")
        packs = [p for p in getattr(args, "packs", "").split(",") if p]
        if packs:
            mount = next((vm for vm in c.get("volumeMounts", []) if vm["mountPath"] == args.model_store), None)
            init = [i for i in pod["spec"].get("initContainers", [])
                    if mount and any(vm["name"] == mount["name"] for vm in i.get("volumeMounts", []))]
            images = {i["image"].rsplit("/", 1)[-1].split(":")[0] for i in init}
            if mount is None:
                problems.append(f"{where}: no volume is mounted at the model store {args.model_store}")
            elif images != {f"facedit-pack-{p}" for p in packs}:
                problems.append(f"{where}: serves packs {packs}, but the init containers filling "
                                f"{args.model_store} are {sorted(images) or 'none'}")
    missing = set(SERVICES) - seen
    if missing:
        problems.append(f"no Deployment runs {sorted(missing)}")
    problems += calls(m)[1]
    redis = m.by.get(("StatefulSet", "redis"))
    if redis is not None:  # the image reads its password from $REDIS_PASSWORD_FILE (docker/redis-entrypoint.sh)
        rc = m.pod(redis)["spec"]["containers"][0]
        path = environment(m, rc).get("REDIS_PASSWORD_FILE", "")
        got = _mounted(m.pod(redis), rc, path) if path else None
        if got is None or got[:3] != ("Secret", "facedit-redis", "password"):
            problems.append(f"StatefulSet redis: REDIS_PASSWORD_FILE {path!r} is not the key password of the "
                            f"mounted Secret facedit-redis")
    return problems


def _peers(rule_peers: list[dict] | None, peer_ns: dict | None, peer_labels: dict, same_ns: bool) -> bool:
    if rule_peers is None:
        return True  # no from/to: every peer
    for p in rule_peers:
        if "ipBlock" in p:
            if peer_ns is None and ipaddress.ip_network(p["ipBlock"]["cidr"]).prefixlen == 0:
                return True
            continue
        if "namespaceSelector" in p:
            if peer_ns is not None and matches(p["namespaceSelector"], peer_ns) and \
                    matches(p.get("podSelector"), peer_labels):
                return True
        elif same_ns and matches(p.get("podSelector"), peer_labels):
            return True
    return False


def _port_ok(rule_ports: list[dict] | None, proto: str, port: int, named: dict[str, int]) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        want = p.get("port")
        if p.get("protocol", "TCP") != proto:
            continue
        if want is None or want == port or named.get(str(want)) == port:
            return True
        if isinstance(want, int) and p.get("endPort") and want <= port <= p["endPort"]:
            return True
    return False


def _allowed(policies: list[dict], direction: str, pod_labels: dict, peer: tuple, proto: str, port: int,
             named: dict[str, int]) -> bool:
    """Whether the policies selecting a pod let this connection in (Ingress) or out (Egress)."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if direction in p["spec"].get("policyTypes", ["Ingress"])
                 and matches(p["spec"]["podSelector"], pod_labels)]
    if not selecting:
        return True
    peer_ns, peer_labels, same_ns = peer
    return any(_peers(r.get(peers_key), peer_ns, peer_labels, same_ns) and _port_ok(r.get("ports"), proto, port, named)
               for p in selecting for r in p["spec"].get(key) or [])


def allowed_connections(m: Manifests) -> tuple[set, dict[str, set]]:
    """What the NetworkPolicies let through: (from, to, protocol, port) between the namespace's pods,
    and per outside peer of OUTSIDE, ("in", to, protocol, port) into the pods and ("out", protocol,
    port, from) out of them (the egress ports tried: EGRESS_PROBES)."""
    pols = m.of("NetworkPolicy")
    ns_labels = {"kubernetes.io/metadata.name": NAMESPACE}
    pods = []
    for w in m.workloads():
        cs = m.pod(w)["spec"]["containers"]
        pods.append((w["metadata"]["name"], m.pod(w)["metadata"].get("labels", {}),
                     {p["name"]: p["containerPort"] for c in cs for p in c.get("ports", []) if "name" in p},
                     {(p.get("protocol", "TCP"), p["containerPort"]) for c in cs for p in c.get("ports", [])}))
    inside, outside = set(), {peer: set() for peer, _, _ in OUTSIDE}
    for dst, dlabels, named, ports in pods:
        for proto, port in ports:
            for src, slabels, _, _ in pods:
                if _allowed(pols, "Egress", slabels, (ns_labels, dlabels, True), proto, port, named) and \
                        _allowed(pols, "Ingress", dlabels, (ns_labels, slabels, True), proto, port, named):
                    inside.add((src, dst, proto, port))
            for peer, pns, plabels in OUTSIDE:
                if _allowed(pols, "Ingress", dlabels, (pns, plabels, False), proto, port, named):
                    outside[peer].add(("in", dst, proto, port))
    for peer, pns, plabels in OUTSIDE:
        for proto, port in EGRESS_PROBES:
            for src, slabels, _, _ in pods:
                if _allowed(pols, "Egress", slabels, (pns, plabels, False), proto, port, {}):
                    outside[peer].add(("out", proto, port, src))
    return inside, outside


def check_network_policies(m: Manifests) -> list[str]:
    made, _ = calls(m)
    inside, outside = allowed_connections(m)
    problems = [f"{s} -> {d}:{port} is a call the services make, but the NetworkPolicies block it"
                for s, d, _, port in sorted(made - inside)]
    problems += [f"{s} -> {d}:{proto}/{port} is allowed by the NetworkPolicies, but no service makes that call"
                 for s, d, proto, port in sorted(inside - made)]
    every_pod = [w["metadata"]["name"] for w in m.workloads()]
    for peer, _, _ in OUTSIDE:
        want = {("in", *t) for t in EXPECTED_FROM_OUTSIDE}
        want |= {("in", *t) for t in EXPECTED_PROMETHEUS} if peer == "prometheus" else set()
        want |= {("out", proto, port, src) for src in every_pod for proto, port in EXPECTED_EGRESS.get(peer, ())}
        for t in sorted(outside[peer] - want, key=str):
            problems.append(f"{peer}: the NetworkPolicies allow {' '.join(map(str, t))}, which nothing needs")
        for t in sorted(want - outside[peer], key=str):
            problems.append(f"{peer}: the NetworkPolicies block {' '.join(map(str, t))}, which is needed")
    return problems


def check_pods(m: Manifests, gpu: bool) -> list[str]:
    """Security contexts and resources of every container; the GPU placement of the model services."""
    problems = []
    for w in m.workloads():
        pod, spec = m.pod(w), m.pod(w)["spec"]
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or not psc.get("runAsUser"):
            problems.append(f"{name(w)}: the pod does not run as a non-root user (runAsNonRoot, runAsUser)")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name(w)}: mounts a service account token it does not need")
        for c in _containers(pod):
            where, sc = f"{name(w)} container {c['name']}", c.get("securityContext", {})
            for bad, why in ((not sc.get("readOnlyRootFilesystem"), "root filesystem is writable"),
                             (sc.get("allowPrivilegeEscalation") is not False, "allows privilege escalation"),
                             ("ALL" not in (sc.get("capabilities") or {}).get("drop", []), "keeps Linux capabilities")):
                problems += [f"{where}: {why}"] if bad else []
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    problems.append(f"{where}: no cpu and memory {part}")
            on_gpu = "nvidia.com/gpu" in res.get("limits", {})
            model = m.service_of(w) in ("encoder", "generator") and c["name"] == m.service_of(w)
            if gpu and model:
                for bad, why in (
                        (str(res.get("limits", {}).get("nvidia.com/gpu")) != "1", "no nvidia.com/gpu: 1 limit"),
                        (spec.get("nodeSelector", {}).get("nvidia.com/gpu.present") != "true",
                         "no GPU node selector (nvidia.com/gpu.present)"),
                        (not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])),
                         "does not tolerate the nvidia.com/gpu taint"),
                        (not c["image"].split(":")[0].endswith("-cuda"), f"image {c['image']} is not a -cuda image")):
                    problems += [f"{where}: {why}"] if bad else []
            elif on_gpu:
                problems.append(f"{where}: asks for a GPU outside the GPU overlay's model services")
            if c["image"].split(":")[0].endswith("-cuda") and not (gpu and model):
                problems.append(f"{where}: a CUDA image ({c['image']}) where no GPU is given")
    return problems


def check(objs: list[dict], gpu: bool) -> list[str]:
    """Every check but the schemas' on rendered objects."""
    m = Manifests(objs)
    return (check_namespace(m) + check_selectors(m) + check_references(m) + check_services(m)
            + check_network_policies(m) + check_pods(m, gpu))


def main(argv: list[str] | None = None) -> int:
    overlays = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or \
        [ROOT / "k8s/overlays/cpu", ROOT / "k8s/overlays/gpu"]
    bad = 0
    for overlay in overlays:
        objs = render(overlay)
        problems = validate(objs) + check(objs, gpu=overlay.name.startswith("gpu"))
        print(f"{overlay}: {len(objs)} objects, Kubernetes {VERSIONS[0]}..{VERSIONS[-1]}: "
              f"{'OK' if not problems else f'{len(problems)} problems'}")
        for p in problems:
            print(f"  {p}")
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
