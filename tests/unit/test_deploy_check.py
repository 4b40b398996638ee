"""k8s/podman/deploy_check.py (make deploy-test's client): its arguments and files, and how it judges
answers. Against real gateways: tests/integration/test_deploy_check.py."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.support import MODEL_STORE, ROOT


def load():
    spec = importlib.util.spec_from_file_location("deploy_check", ROOT / "k8s/podman/deploy_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dc = load()


def test_the_token_of_a_client_comes_from_generate_secrets_format(tmp_path):
    path = tmp_path / "client-tokens.txt"
    path.write_text("ops=aaa111\napp=bbb=222\n\n")  # as k8s/generate-secrets.sh writes it
    assert dc.read_token(path, "ops") == "aaa111"
    assert dc.read_token(path, "app") == "bbb=222"
    with pytest.raises(SystemExit, match=r"client 'web' is not in .*client-tokens.txt \(it has: app, ops\)"):
        dc.read_token(path, "web")
    with pytest.raises(SystemExit, match="k8s/generate-secrets.sh makes it"):
        dc.read_token(tmp_path / "missing.txt", "app")


def test_the_pack_is_read_from_the_checkouts_manifest(tmp_path):
    manifest = dc.read_manifest(MODEL_STORE, "digiface64")
    assert (manifest["pack"], manifest["resolution"], manifest["latent_dim"]) == ("digiface64", 64, 100)
    with pytest.raises(SystemExit, match="cannot read the pack's manifest"):
        dc.read_manifest(tmp_path, "digiface64")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "manifest.json").write_text(json.dumps({"pack": "p", "version": "1"}))
    with pytest.raises(SystemExit, match="has no resolution, latent_dim"):
        dc.read_manifest(tmp_path, "p")


@pytest.mark.parametrize(("flags", "message"), [
    (["--strength", "0"], "--strength must be positive"),
    (["--faces", "0"], "--faces must be 1..100"),
    (["--ca", "/nonexistent/ca.crt"], "no CA certificate /nonexistent/ca.crt: k8s/generate-secrets.sh makes it"),
])
def test_wrong_arguments_are_refused_before_any_call(flags, message, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("not used")
    with pytest.raises(SystemExit) as info:
        dc.main(["--address", "127.0.0.1:1", "--ca", str(ca), *flags])
    assert message in str(info.value)
    with pytest.raises(SystemExit):  # argparse: --address is required
        dc.main([])


def test_scores_must_follow_the_edits_on_most_faces_and_on_average():
    good = [(s, 0.4, 0.9, 0.1) for s in range(7)] + [(7, 0.7, 0.59, 0.69)]  # one face the wrong way: allowed
    dc.judge_scores(good, "smile", 2.0, 0.1)
    three_wrong = [(s, 0.4, 0.9, 0.1) for s in range(5)] + [(s, 0.5, 0.5, 0.5) for s in range(5, 8)]
    with pytest.raises(dc.CheckFailed, match="3 of 8 faces score no higher at \\+2 than at -2.*seed 5: 0.500"):
        dc.judge_scores(three_wrong, "smile", 2.0, 0.1)
    barely = [(s, 0.4, 0.42, 0.4) for s in range(8)]
    with pytest.raises(dc.CheckFailed, match="mean separation 0.020 \\(at least 0.1 asked\\)"):
        dc.judge_scores(barely, "smile", 2.0, 0.1)


def test_far_from_the_faces_means_more_than_a_box_size_away():
    far = dc.far_from([[40, 40, 50, 60]], (100, 100))  # 10 wide, 20 high
    assert not far[20:80, 30:60].any()  # the box grown by its size on every side
    assert far[19, 45] and far[80, 45] and far[50, 29] and far[50, 60]
    assert dc.far_from([], (4, 4)).all()
    edge = dc.far_from([[0, 0, 10, 10]], (30, 30))  # clipped at the photo's border
    assert not edge[:20, :20].any() and edge[20:, :].all() and edge[:, 20:].all()


def test_the_default_photo_is_a_real_portrait():
    photo = dc.decode(dc.astronaut_png(), "astronaut")
    assert photo.shape == (512, 512, 3) and photo.std() > 30
    with pytest.raises(dc.CheckFailed, match="the answer \\(5 bytes\\) is not an image"):
        dc.decode(b"\x89PNG0", "the answer")
    assert dc.mean_change(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)) == 255.0
