"""The short soak of `make test` (`make soak` runs 10,000): the whole stack as processes, lean and
full Edits, EditPhoto on a real portrait and EditSweeps at concurrency 32, with no failure."""
import pytest

from bench import soak
from tests.support import MODEL_STORE

pytestmark = pytest.mark.e2e


def test_a_short_soak_of_mixed_edits_has_no_failure(tmp_path):
    summary = soak.run(MODEL_STORE, "digiface64", edits=240, concurrency=32, log_dir=tmp_path / "stack")
    assert summary["failures"] == {} and summary["warm_failures"] == {}, summary["failure_examples"]
    assert summary["calls"] == {kind: 60 for kind in soak.KINDS}
    assert set(summary["rss_mb_after"]) == {"directions", "encoder", "generator", "gateway", "redis"}
    assert [r["calls"] for r in summary["rss_mb_during"]] == list(range(24, 241, 24))  # progress every tenth
