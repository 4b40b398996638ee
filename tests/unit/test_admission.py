"""Per-client rate and concurrency accounting (services/common/admission.py), on a clock the test moves."""
import pytest

from services.common.admission import Admission, Limits, Refused


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_burst_then_the_rate_with_a_retry_hint_that_is_right():
    clock = Clock()
    adm = Admission(clock=clock)
    limits = Limits(rate_per_s=4, burst=3, concurrency=0)
    for _ in range(3):
        adm.enter("a", limits)
        adm.leave("a")
    with pytest.raises(Refused, match=r"client a is over its rate of 4 calls/s \(burst 3\); retry after 0.25 s") as info:
        adm.enter("a", limits)
    clock.now += info.value.retry_after_s * 0.9
    with pytest.raises(Refused):
        adm.enter("a", limits)
    clock.now += info.value.retry_after_s * 0.2  # past the hint: one token back
    adm.enter("a", limits)
    adm.enter("b", limits)  # another client has its own bucket


def test_refused_calls_do_not_spend_tokens_and_the_bucket_never_exceeds_the_burst():
    clock = Clock()
    adm = Admission(clock=clock)
    limits = Limits(rate_per_s=1, burst=2, concurrency=0)
    adm.enter("a", limits)
    adm.enter("a", limits)
    for _ in range(5):
        with pytest.raises(Refused):
            adm.enter("a", limits)
    clock.now += 1.0
    adm.enter("a", limits)  # one second: exactly one token, not eaten by the refusals
    clock.now += 3600
    adm.enter("a", limits)
    adm.enter("a", limits)
    with pytest.raises(Refused):  # an hour idle gives back the burst, no more
        adm.enter("a", limits)


def test_concurrency_counts_calls_in_progress_until_they_leave():
    adm = Admission(clock=Clock())
    limits = Limits(rate_per_s=0, burst=1, concurrency=2)
    adm.enter("a", limits)
    adm.enter("a", limits)
    with pytest.raises(Refused, match="client a has 2 calls in progress, its limit"):
        adm.enter("a", limits)
    assert adm.in_flight("a") == 2
    adm.leave("a")
    adm.enter("a", limits)
    assert adm.in_flight("a") == 2


def test_idle_clients_are_forgotten_beyond_the_cap_but_busy_ones_are_kept():
    adm = Admission(max_clients=3, clock=Clock())
    limits = Limits(rate_per_s=10, burst=10, concurrency=5)
    adm.enter("busy", limits)  # stays in progress
    for k in range(100):
        adm.enter(f"ip:{k}", limits)
        adm.leave(f"ip:{k}")
    assert len(adm) <= 3
    assert adm.in_flight("busy") == 1


@pytest.mark.parametrize("rate, burst, concurrency", [(-1, 1, 1), (1, 0, 1), (float("nan"), 1, 1), (1, 1, -1)])
def test_nonsense_limits_are_refused(rate, burst, concurrency):
    with pytest.raises(ValueError):
        Limits(rate, burst, concurrency)


def test_a_tokens_file_entry_may_set_its_own_limits_and_nonsense_is_refused():
    import json

    from services.common.tokens import TokensFileError, parse

    entry = {"name": "batch", "token": "batch-token-0123456789abcdef", "roles": ["edit"]}
    [(_, client)] = parse(json.dumps({"clients": [{**entry, "rate_per_s": 5, "burst": 10, "concurrency": 2}]}))
    assert (client.rate_per_s, client.burst, client.concurrency) == (5, 10, 2)
    [(_, plain)] = parse(json.dumps({"clients": [entry]}))
    assert (plain.rate_per_s, plain.burst, plain.concurrency) == (None, None, None)
    for key, value in (("rate_per_s", -1), ("rate_per_s", "fast"), ("burst", 0), ("concurrency", 1.5)):
        with pytest.raises(TokensFileError, match=f"client 'batch': {key} must be"):
            parse(json.dumps({"clients": [{**entry, key: value}]}))
