"""Conditional manipulation and edit composition (services.directions.compose)."""
import numpy as np
import pytest

from facedit_core.compose import compose, project_out
from facedit_core.errors import InvalidArgument


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_projection_is_orthogonal_to_every_kept_direction_and_unit():
    rng = np.random.default_rng(0)
    n = unit(rng.standard_normal(32))
    kept = np.stack([unit(rng.standard_normal(32)) for _ in range(5)])
    p, norm = project_out(n, kept)
    assert np.allclose(kept @ p, 0, atol=1e-5)
    assert np.linalg.norm(p) == pytest.approx(1.0, abs=1e-5)
    assert 0 < norm < 1


def test_projection_matches_interfacegan_two_attribute_formula():
    # InterFaceGAN: n1' = (n1 - (n1.n2) n2) / |...| for one kept attribute
    n1, n2 = unit([1.0, 1.0, 0.0]), unit([1.0, 0.0, 0.0])
    p, norm = project_out(n1, n2[None])
    expected = n1 - (n1 @ n2) * n2
    assert np.allclose(p, expected / np.linalg.norm(expected), atol=1e-6)
    assert norm == pytest.approx(np.linalg.norm(expected), abs=1e-6)


def test_no_kept_attributes_leaves_the_direction_alone():
    n = unit([3.0, 4.0])
    p, norm = project_out(n, np.zeros((0, 2), np.float32))
    assert np.array_equal(p, n) and norm == 1.0


def test_edit_inside_kept_span_is_refused():
    n = unit([1.0, 0.0, 0.0])
    with pytest.raises(InvalidArgument, match="kept"):
        project_out(n, np.stack([unit([1.0, 1e-4, 0.0])]))


def test_compose_sums_strength_times_projected_directions():
    a, b, c = unit([1, 0, 0, 0]), unit([0, 1, 0, 0]), unit([1, 1, 1, 0])
    delta, norms = compose([a, b], [2.0, -1.0], np.zeros((0, 4), np.float32))
    assert np.allclose(delta, [2, -1, 0, 0])
    delta, norms = compose([c], [3.0], a[None])
    assert delta[0] == pytest.approx(0, abs=1e-6)
    assert np.linalg.norm(delta) == pytest.approx(3.0, abs=1e-5)
    assert norms[0] == pytest.approx(np.sqrt(2 / 3), abs=1e-5)
