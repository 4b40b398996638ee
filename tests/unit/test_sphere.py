"""Unit tests of the sphere maths of ISTRC (services/common/sphere.py)."""
import numpy as np
import pytest

from facedit_core import sphere


def unit(rng, n=None, dim=16):
    x = rng.standard_normal((n, dim) if n else dim)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_slerp_ends_midpoint_and_constant_speed():
    rng = np.random.default_rng(0)
    a, b = unit(rng), unit(rng)
    assert np.allclose(sphere.slerp(a, b, 0.0), a, atol=1e-15) and np.allclose(sphere.slerp(a, b, 1.0), b, atol=1e-15)
    theta = sphere.angle(a, b)
    for t in (0.1, 0.25, 0.5, 0.9):
        x = sphere.slerp(a, b, t)
        assert np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)
        assert sphere.angle(a, x) == pytest.approx(t * theta, abs=1e-9)  # constant angular speed
        assert sphere.angle(x, b) == pytest.approx((1 - t) * theta, abs=1e-9)
    with pytest.raises(ValueError, match="antipodal"):
        sphere.slerp(a, -a, 0.5)


def test_spherical_mean_of_two_is_the_slerp_and_is_weighted():
    rng = np.random.default_rng(1)
    a, b = unit(rng), unit(rng)
    assert np.allclose(sphere.mean(np.stack([a, b])), sphere.slerp(a, b, 0.5), atol=1e-9)
    assert np.allclose(sphere.mean(np.stack([a, b]), np.array([3.0, 1.0])), sphere.slerp(a, b, 0.25), atol=1e-8)
    assert np.allclose(sphere.mean(np.stack([a, b]), np.array([0.0, 2.0])), b, atol=1e-9)
    with pytest.raises(ValueError, match="weights"):
        sphere.mean(np.stack([a, b]), np.array([-1.0, 2.0]))


def test_spherical_mean_minimises_the_squared_angles():
    rng = np.random.default_rng(2)
    pts = unit(rng, 7)
    m = sphere.mean(pts)
    cost = lambda x: sum(sphere.angle(x, p) ** 2 for p in pts)  # noqa: E731
    assert np.linalg.norm(m) == pytest.approx(1.0)
    # the tangent-space gradient vanishes at the Karcher mean and nearby points cost more
    assert np.linalg.norm(sum(sphere.log_map(m, p) for p in pts)) < 1e-8
    for _ in range(5):
        other = sphere.exp_map(m, sphere.tangent(m, 0.05 * rng.standard_normal(16)))
        assert cost(other) > cost(m)


def test_arithmetic_identities():
    rng = np.random.default_rng(3)
    a, b, c = unit(rng), unit(rng), unit(rng)
    assert np.allclose(sphere.arithmetic(a, b, b), a, atol=1e-9)  # c = b: the move b -> a lands on a
    assert np.allclose(sphere.arithmetic(b, b, c), c, atol=1e-9)  # a = b: no move
    r = sphere.arithmetic(a, b, c)
    assert np.linalg.norm(r) == pytest.approx(1.0)
    assert sphere.angle(c, r) == pytest.approx(sphere.angle(b, a), abs=1e-9)  # the same distance moved
    lin = sphere.arithmetic(a, b, c, spherical=False)
    assert np.allclose(lin, (a - b + c) / np.linalg.norm(a - b + c))
    # 60 degrees apart and c = b - a: the linear sum is the zero vector, which has no direction
    a60, b60 = np.eye(16)[0], 0.5 * np.eye(16)[0] + np.sqrt(0.75) * np.eye(16)[1]
    with pytest.raises(ValueError, match="zero"):
        sphere.arithmetic(a60, b60, b60 - a60, spherical=False)


def test_walk_takes_constant_steps_and_renormalises():
    rng = np.random.default_rng(4)
    e, w = unit(rng), rng.standard_normal(16)
    x, info = sphere.walk(e, lambda _: w, strength=0.5, step=0.05)
    assert info["steps"] == 10 and not info["stopped_early"]
    assert np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)
    assert x @ w > e @ w  # the logit rises
    # each step turns by atan(step); with a constant gradient the path stays on one great circle
    assert info["arc"] == pytest.approx(10 * np.arctan(0.05), rel=1e-6)
    y, info_neg = sphere.walk(e, lambda _: w, strength=-0.5, step=0.05)
    assert y @ w < e @ w and info_neg["arc"] == pytest.approx(info["arc"], rel=1e-6)
    # a strength that is not a multiple of the step: the last step is shorter
    _, info_odd = sphere.walk(e, lambda _: w, strength=0.12, step=0.05)
    assert info_odd["steps"] == 3
    assert info_odd["arc"] == pytest.approx(2 * np.arctan(0.05) + np.arctan(0.02), rel=1e-6)
    # multiples of the step that floating point does not divide exactly (0.6 / 0.05 = 11.999...,
    # a float32 0.6 from a request is 0.6000000238) take exactly that many steps
    for strength in (0.6, float(np.float32(0.6)), 0.3):
        assert sphere.walk(e, lambda _: w, strength=strength, step=0.05)[1]["steps"] == round(strength / 0.05)


def test_walk_stops_at_the_classifiers_optimum_and_keeps_attributes():
    rng = np.random.default_rng(5)
    w = rng.standard_normal(16)
    pole = w / np.linalg.norm(w)
    x, info = sphere.walk(pole, lambda _: w, strength=1.0, step=0.05)
    assert info["stopped_early"] and info["steps"] == 0 and np.allclose(x, pole)
    # keep: the kept classifier's logit does not change to first order along the path
    e, k = unit(rng), rng.standard_normal(16)
    x_keep, _ = sphere.walk(e, lambda _: w, strength=0.3, step=0.01, keep=k[None])
    x_free, _ = sphere.walk(e, lambda _: w, strength=0.3, step=0.01)
    assert abs(x_keep @ k - e @ k) < 0.2 * abs(x_free @ k - e @ k)
    assert x_keep @ w > e @ w
