"""services.common.onnx: threading options reach the session, IO binding computes what run() does."""
import numpy as np
import pytest

from services.common import onnx


def test_spinning_is_off_by_default_and_threads_are_set(pack):
    opts = onnx.session(pack.artefact("generator")).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    opts = onnx.session(pack.artefact("generator"), onnx.Threading(2, 1, spinning=True)).get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    with pytest.raises(ValueError):
        onnx.Threading(-1)


def test_io_binding_gives_the_same_pixels_as_run(pack):
    z = np.random.default_rng(0).standard_normal((5, pack.latent_dim), dtype=np.float32)
    plain = onnx.Model(pack.artefact("generator"), onnx.Threading(1), io_binding="off")
    bound = onnx.Model(pack.artefact("generator"), onnx.Threading(1), io_binding="on")
    assert bound.io_binding and not plain.io_binding
    assert np.array_equal(plain.run(z), bound.run(z))
    assert plain.run(z).shape == (5, pack.resolution, pack.resolution, 3)
    # auto: bound on the CUDA provider only
    assert onnx.Model(pack.artefact("generator"), io_binding="auto").io_binding == (plain.device == "cuda")
    with pytest.raises(ValueError):
        onnx.Model(pack.artefact("generator"), io_binding="sometimes")
