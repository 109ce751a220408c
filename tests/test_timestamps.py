"""The shared timestamp format: what manifests and locks write, the report parses back."""
import re

from safetrigger import timestamps


def test_now_has_a_utc_offset_and_parses_back():
    stamp = timestamps.now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", stamp), stamp
    assert timestamps.seconds_between(stamp, stamp) == 0


def test_seconds_between_counts_seconds_and_refuses_bad_input():
    assert timestamps.seconds_between("2026-12-04T18:00:00+0000", "2026-12-04T18:02:05+0000") == 125
    assert timestamps.seconds_between(None, "2026-12-04T18:02:05+0000") is None
    assert timestamps.seconds_between("yesterday", "2026-12-04T18:02:05+0000") is None
