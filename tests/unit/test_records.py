"""Direction records (facedit_core.records): every field of a stored record is bounded, and a
caller's input quoted in a message is cut short."""
import dataclasses

import pytest

from facedit_core.errors import InvalidArgument, shorten
from facedit_core.records import MAX_PROVENANCE_BYTES, MAX_STRENGTH_LIMIT, OFFSET_MEANING, DirectionRecord, custom_id

GOOD = DirectionRecord(id="custom/smile", attribute="smile", method="custom", strength_min=-2.0, strength_max=2.0,
                       strength_limit=10.0, strength_meaning=OFFSET_MEANING, metrics={"gap": 2.0},
                       provenance={"made": "by a test"})


def test_a_sane_record_passes_and_round_trips_through_json():
    assert GOOD.check() is GOOD
    assert DirectionRecord.from_json(GOOD.to_json()) == GOOD


@pytest.mark.parametrize("change, match", [
    ({"strength_limit": 1e30, "strength_max": 1e30}, f"limit <= {MAX_STRENGTH_LIMIT:g}"),
    ({"strength_limit": float("nan")}, "finite"),
    ({"strength_min": -20.0}, "-limit <= strength_min"),
    ({"provenance": {"text": "x" * MAX_PROVENANCE_BYTES}}, "provenance is"),
    ({"provenance": "a string"}, "JSON object"),
    ({"metrics": {f"m{i}": 1.0 for i in range(65)}}, "at most 64"),
    ({"metrics": {"gap": float("inf")}}, "finite numbers"),
    ({"attribute": "a" * 41}, "over 40 characters"),
    ({"strength_meaning": "m" * 513}, "over 512 characters"),
    ({"id": "custom/" + "n" * 100}, "1 to 96 characters"),
    ({"id": "smile", "method": "custom"}, "'<method>/<name>'"),
    ({"id": "magic/smile", "method": "magic"}, "with a method of"),
    ({"space": "pixels"}, "space must be"),
    ({"dim": 10**9}, "dim must be"),
])
def test_every_field_is_bounded(change, match):
    with pytest.raises(InvalidArgument, match=match) as info:
        dataclasses.replace(GOOD, **change).check()
    assert len(str(info.value)) < 300  # the message quotes nothing large


def test_input_quoted_back_is_cut_to_80_characters():
    with pytest.raises(InvalidArgument) as info:
        custom_id("N" * 10_000_000)
    assert len(str(info.value)) < 250 and "10000000 characters" in str(info.value)
    assert shorten("abc") == "abc" and shorten("x" * 81).startswith("x" * 80 + "...")
