"""The Kubernetes manifests, offline (k8s/check_manifests.py does the work): both overlays render with
kubectl's kustomize, every object validates with kubernetes-validate --strict for Kubernetes 1.29 to
1.33, and the cross-references hold. Each check is shown to fail: a temporary copy of k8s/ is broken
in one place, rendered again, and the check must name the fault.

kubectl comes from PATH or from build/kubectl/ (`make kubectl`, which `make test` runs first)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest
import yaml

from tests.support import ROOT

spec = importlib.util.spec_from_file_location("check_manifests", ROOT / "k8s/check_manifests.py")
ck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ck)

OVERLAYS = ("cpu", "gpu")


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    """k8s/ copied without any secrets made before, with fresh ones from k8s/generate-secrets.sh."""
    ck.kubectl()  # FileNotFoundError naming `make kubectl` when there is none
    dst = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "k8s", dst, ignore=shutil.ignore_patterns("generated", "__pycache__"))
    made = subprocess.run(["sh", str(dst / "generate-secrets.sh")], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    return dst


@pytest.fixture(scope="module")
def rendered(k8s):
    return {o: ck.render(k8s / "overlays" / o) for o in OVERLAYS}


def test_kubernetes_validate_has_the_schemas_of_every_version_checked():
    import kubernetes_validate.utils as kvu

    have = {kvu.major_minor(v) for v in kvu.all_versions()}
    assert set(ck.VERSIONS) <= have and ck.VERSIONS == ("1.29", "1.30", "1.31", "1.32", "1.33")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly_for_kubernetes_1_29_to_1_33(rendered, overlay):
    objs = rendered[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "Job", "ConfigMap", "Secret", "Namespace"} <= kinds
    assert ck.validate(objs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_cross_references_hold(rendered, overlay):
    assert ck.check(rendered[overlay], gpu=overlay == "gpu") == []


def test_the_gpu_overlay_gives_the_model_services_a_gpu_each_and_the_cpu_overlay_none(rendered):
    for overlay in OVERLAYS:
        m = ck.Manifests(rendered[overlay])
        for name in ("encoder", "generator"):
            pod = m.pod(m.by[("Deployment", name)])["spec"]
            c = pod["containers"][0]
            if overlay == "gpu":
                assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
                assert c["image"] == f"localhost/facedit-{name}-cuda:dev"
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
            else:
                assert "nvidia.com/gpu" not in c["resources"]["limits"] and "nodeSelector" not in pod
                assert c["image"] == f"localhost/facedit-{name}:dev"
        for name in ("gateway", "directions"):
            assert m.pod(m.by[("Deployment", name)])["spec"]["containers"][0]["image"] == \
                f"localhost/facedit-{name}:dev"


def with_components(k8s_dir, overlay: str, swap: dict[str, str], add: list[str]) -> None:
    path = k8s_dir / "overlays" / overlay / "kustomization.yaml"
    k = yaml.safe_load(path.read_text())
    k["components"] = [swap.get(c, c) for c in k["components"]] + add
    path.write_text(yaml.safe_dump(k))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cert_manager_and_torchserve_are_options_that_check_too(k8s, tmp_path, overlay):
    copy = tmp_path / "k8s"
    shutil.copytree(k8s, copy)
    with_components(copy, overlay, {"../../components/tls-files": "../../components/cert-manager"},
                    ["../../components/torchserve"])
    objs = ck.render(copy / "overlays" / overlay)
    m = ck.Manifests(objs)
    certs = {c["spec"]["secretName"]: c for c in m.of("Certificate")}
    assert set(certs) == {"facedit-ca", *(f"facedit-tls-{n}" for n in (*ck.SERVICES, "admin"))}
    assert not [o for o in m.of("Secret") if o["metadata"]["name"].startswith("facedit-tls-")]
    for n in (*ck.SERVICES, "admin"):  # the common name is the peer name of --peer-roles
        cert = certs[f"facedit-tls-{n}"]["spec"]
        assert cert["commonName"] == n and n in cert["dnsNames"]
        assert {"server auth", "client auth"} <= set(cert["usages"])
    issuers = {i["metadata"]["name"] for i in m.of("Issuer")}
    assert all(c["spec"]["issuerRef"]["name"] in issuers for c in certs.values())
    generator = m.pod(m.by[("Deployment", "generator")])["spec"]["containers"]
    assert [c["name"] for c in generator] == ["generator", "torchserve"]
    assert ck.validate(objs) == []
    assert ck.check(objs, gpu=overlay == "gpu") == []


# (what breaks, overlay, [(file under k8s/, text, replacement)], a problem the checks must report)
NP = "base/networkpolicies.yaml"
TO_REDIS = "  egress:\n    - to:\n        - podSelector:\n            matchLabels:\n              app: facedit-redis\n"
TO_ENCODER = "    - to:\n        - podSelector:\n            matchLabels:\n              app: facedit-encoder\n"
ENCODER_FROM = ("  name: encoder\nspec:\n  podSelector:\n    matchLabels:\n      app: facedit-encoder\n"
                "  policyTypes: [\"Ingress\"]\n  ingress:\n    - from:\n")
FROM_DIRECTIONS = "        - podSelector:\n            matchLabels:\n              app: facedit-directions\n"
PUBLIC = "    - ports:  # from anywhere: the public API\n        - protocol: TCP\n          port: 50050\n"
BREAKAGES = [
    ("unknown field", "cpu",
     [("base/gateway.yaml", "      enableServiceLinks: false\n",
       "      enableServiceLinks: false\n      hostnetwork: true\n")],
     "Additional properties are not allowed ('hostnetwork' was unexpected)"),
    ("Service selects nothing", "cpu",
     [("base/encoder.yaml", "  clusterIP: None\n  selector:\n    app: facedit-encoder",
       "  clusterIP: None\n  selector:\n    app: facedit-encodr")],
     "Service encoder: its selector {'app': 'facedit-encodr'} selects no pod"),
    ("Deployment selector", "cpu",
     [("base/generator.yaml", "    matchLabels:\n      app: facedit-generator\n  template",
       "    matchLabels:\n      app: facedit-gen\n  template")],
     "Deployment generator: its selector"),
    ("HPA target", "cpu", [("base/autoscaling.yaml", "    name: directions\n", "    name: direction\n")],
     "HorizontalPodAutoscaler directions scales Deployment direction, which does not exist"),
    ("PDB blocks evictions", "cpu",
     [("base/autoscaling.yaml", "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app: facedit-gateway",
       "  minAvailable: 2\n  selector:\n    matchLabels:\n      app: facedit-gateway")],
     "PodDisruptionBudget gateway: minAvailable 2 blocks every eviction"),
    ("container port", "cpu", [("base/encoder.yaml", "containerPort: 50051", "containerPort: 50055")],
     "Deployment encoder container encoder: container port grpc is 50055, the service listens on 50051"),
    ("unknown setting", "cpu", [("base/config.yaml", "FACEDIT_METRICS_PORT", "FACEDIT_METRIC_PORT")],
     "['FACEDIT_METRIC_PORT'] are no settings of the gateway service"),
    ("liveness service", "cpu", [("base/gateway.yaml", "service: liveness", "service: facedit.v1.Encoder")],
     "Deployment gateway container gateway: livenessProbe asks health of 'facedit.v1.Encoder'"),
    ("probe port", "gpu",
     [("base/directions.yaml", "              port: 8081\n              service: facedit.v1.Directions",
       "              port: 50052\n              service: facedit.v1.Directions")],
     "readinessProbe asks port 50052, the plaintext health port is 8081"),
    ("missing Secret", "cpu", [("base/gateway.yaml", "secretName: facedit-tokens", "secretName: facedit-token")],
     "Deployment gateway volume tokens: Secret facedit-token does not exist"),
    ("missing ConfigMap key", "gpu", [("base/config.yaml", "  pack: digiface64", "  name: digiface64")],
     "ConfigMap facedit-pack has no key 'pack'"),
    ("file not in its Secret", "cpu",
     [("base/gateway.yaml", "- name: FACEDIT_TLS_KEY\n              value: /etc/facedit/tls/tls.key",
       "- name: FACEDIT_TLS_KEY\n              value: /etc/facedit/tls/key.pem")],
     "--tls-key /etc/facedit/tls/key.pem: Secret facedit-tls-gateway (mounted at /etc/facedit/tls) has no key"),
    ("mTLS off", "cpu",
     [("base/encoder.yaml", "- name: FACEDIT_TLS_CLIENT_CA\n              value: /etc/facedit/tls/ca.crt\n",
       "- name: FACEDIT_LOG_LEVEL\n              value: INFO\n")],
     "Deployment encoder container encoder: --tls-client-ca is not set"),
    ("address port", "cpu", [("base/gateway.yaml", "dns:///generator:50053", "dns:///generator:50054")],
     "Deployment gateway calls generator:50054: Service generator has no port 50054"),
    ("not headless", "cpu",
     [("base/generator.yaml", "  clusterIP: None\n  selector:\n    app: facedit-generator",
       "  selector:\n    app: facedit-generator")],
     "Service generator is not headless"),
    ("Redis password file", "cpu",
     [("base/redis.yaml", "              - key: password\n                path: password",
       "              - key: url\n                path: password")],
     "StatefulSet redis: REDIS_PASSWORD_FILE '/etc/facedit/redis/password' is not the key password"),
    ("Redis URL", "cpu", [("components/secrets/generated/redis-url", "redis://:", "redis://:x")],
     "the Redis URL's password is not the password of Secret facedit-redis"),
    ("pack image", "cpu", [("base/encoder.yaml", "facedit-pack-digiface64:dev", "facedit-pack-synth:dev")],
     "serves packs ['digiface64'], but the init containers filling /models are ['facedit-pack-synth']"),
    ("a call blocked", "cpu",
     [(NP, "app: facedit-directions\n      ports:\n        - protocol: TCP\n          port: 6379",
       "app: facedit-director\n      ports:\n        - protocol: TCP\n          port: 6379")],
     "directions -> redis:6379 is a call the services make, but the NetworkPolicies block it"),
    ("a connection allowed that nobody makes", "cpu",
     [(NP, TO_REDIS, TO_REDIS.replace("  egress:\n", "  egress:\n" + TO_ENCODER, 1)),
      (NP, ENCODER_FROM, ENCODER_FROM + FROM_DIRECTIONS)],
     "directions -> encoder:TCP/50051 is allowed by the NetworkPolicies, but no service makes that call"),
    ("gateway open on every port", "cpu", [(NP, PUBLIC, "    - {}\n")],
     "internet: the NetworkPolicies allow in gateway TCP 9100, which nothing needs"),
    ("writable root filesystem", "cpu",
     [("base/redis.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")],
     "StatefulSet redis container redis: root filesystem is writable"),
    ("no memory limit", "cpu",
     [("overlays/cpu/model-services.yaml", "              cpu: \"2\"\n              memory: 1Gi\n",
       "              cpu: \"2\"\n")],
     "Deployment generator container generator: no cpu and memory limits"),
    ("no GPU", "gpu", [("overlays/gpu/model-services.yaml", "              nvidia.com/gpu: 1\n", "")],
     "Deployment encoder container encoder: no nvidia.com/gpu: 1 limit"),
    ("CPU image on a GPU", "gpu",
     [("overlays/gpu/kustomization.yaml", "newName: localhost/facedit-generator-cuda",
       "newName: localhost/facedit-generator")],
     "Deployment generator container generator: image localhost/facedit-generator:dev is not a -cuda image"),
    ("namespace", "cpu", [("overlays/cpu/kustomization.yaml", "namespace: facedit\n", "")],
     "Secret facedit-redis is in namespace None, not 'facedit'"),
]


@pytest.mark.parametrize("what,overlay,edits,expected", BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_check_fails_on_a_broken_copy(k8s, tmp_path, what, overlay, edits, expected):
    copy = tmp_path / "k8s"
    shutil.copytree(k8s, copy)
    for rel, old, new in edits:
        path = copy / rel
        text = path.read_text()
        assert old in text, f"{rel} no longer holds {old!r}: update this breakage"
        path.write_text(text.replace(old, new, 1))
    objs = ck.render(copy / "overlays" / overlay)
    problems = ck.check(objs, gpu=overlay == "gpu")
    if what == "unknown field":
        assert problems == []  # the schema alone catches it
        problems = ck.validate(objs)
        assert len(problems) == len(ck.VERSIONS), problems  # once per version
    assert any(expected in p for p in problems), "\n".join(problems)


def load_kube_play():
    spec = importlib.util.spec_from_file_location("kube_play", ROOT / "k8s/podman/kube_play.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_overlay_becomes_one_pod_that_podman_kube_play_runs(rendered, tmp_path):
    """k8s/podman/kube_play.py (run for real with the images of `make images`: k8s/podman/play.sh up)."""
    kube_play = load_kube_play()
    ports = kube_play.convert(rendered["cpu"], tmp_path / "out", port_offset=1000, pod_name="facedit-test")
    (pod,) = list(yaml.safe_load_all((tmp_path / "out/facedit.yaml").read_text()))
    assert pod["kind"] == "Pod" and pod["metadata"]["name"] == "facedit-test"
    assert (tmp_path / "out/facedit.yaml").stat().st_mode & 0o077 == 0  # literal secrets inside
    spec_ = pod["spec"]
    names = [c["name"] for c in spec_["initContainers"] + spec_["containers"]]
    assert len(names) == len(set(names))
    assert {"redis", *ck.SERVICES, "publish-pack-publish"} <= set(names)
    assert {"encoder-pack", "directions-pack", "generator-pack"} <= set(names)
    assert set(spec_["hostAliases"][0]["hostnames"]) >= {"redis", *ck.SERVICES} and \
        spec_["hostAliases"][0]["ip"] == "127.0.0.1"
    kinds = {k for v in spec_["volumes"] for k in v if k != "name"}
    assert kinds <= {"hostPath", "emptyDir", "persistentVolumeClaim"}  # podman 4.3 crashes on secret volumes
    published = [(p["hostIP"], p["hostPort"]) for c in spec_["containers"] for p in c.get("ports", [])
                 if "hostPort" in p]
    assert all(ip == "127.0.0.1" for ip, _ in published) and len(published) == len(set(published)) == 9
    assert ports["gateway"]["grpc"] == 51050
    in_pod = [p["containerPort"] for c in spec_["containers"] for p in c.get("ports", [])]
    assert len(in_pod) == len(set(in_pod)), "one network namespace: every port once"
    for c in spec_["containers"]:
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        assert all("valueFrom" not in e for e in c.get("env", [])) and "$(" not in " ".join(c.get("args", []))
        if c["name"] in ck.SERVICES:  # the moved ports are the ones the service listens on
            args, _ = ck.parse_flags(c["name"], env, [])
            got = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert (got["metrics"], got["health"]) == (args.metrics_port, args.health_port)
            assert ports[c["name"]]["health"] == args.health_port + 1000
    tokens = next(v for v in spec_["volumes"] if v["name"] == "gateway-tokens")["hostPath"]["path"]
    assert json_clients(tokens) == {"ops", "app"}


def test_the_podman_conversion_can_take_images_of_another_tag(rendered, tmp_path):
    """make deploy-test IMAGE_TAG=x runs the images of make images IMAGE_TAG=x."""
    kube_play = load_kube_play()
    kube_play.convert(rendered["cpu"], tmp_path / "out", image_tag="cidev")
    (pod,) = list(yaml.safe_load_all((tmp_path / "out/facedit.yaml").read_text()))
    images = {c["image"] for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]}
    assert images == {f"localhost/facedit-{n}:cidev" for n in ("redis", *ck.SERVICES, "pack-digiface64")}
    assert kube_play.retag("localhost/facedit-gateway", "x") == "localhost/facedit-gateway:x"
    assert kube_play.retag("localhost/facedit-gateway:dev", None) == "localhost/facedit-gateway:dev"
    assert kube_play.retag("registry.example:5000/facedit-gateway:1", "x") == "registry.example:5000/facedit-gateway:1"
    with pytest.raises(SystemExit):
        kube_play.main(["-", "--out", str(tmp_path / "bad"), "--image-tag", "no/tags"])


def json_clients(folder) -> set[str]:
    import json
    from pathlib import Path

    return {c["name"] for c in json.loads((Path(folder) / "tokens.json").read_text())["clients"]}


def test_the_podman_conversion_refuses_the_gpu_overlay(rendered, tmp_path):
    with pytest.raises(SystemExit, match="asks for a GPU"):
        load_kube_play().convert(rendered["gpu"], tmp_path / "out")
