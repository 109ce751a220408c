"""The one timestamp format of manifests, stage records, locks and logs.

Local time with its UTC offset (``2026-12-04T18:40:02+0000``), so a reader can tell which
zone a record was written in; the report's stage durations parse it back (``seconds_between``,
which subtracts the clock times and ignores the offset: both ends come from one host).
"""
from __future__ import annotations

import time

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now() -> str:
    """The current time as TIMESTAMP_FORMAT."""
    return time.strftime(TIMESTAMP_FORMAT)


def seconds_between(start, end) -> float | None:
    """end - start in seconds, or None when either is missing or not in TIMESTAMP_FORMAT."""
    try:
        return time.mktime(time.strptime(end, TIMESTAMP_FORMAT)) - time.mktime(time.strptime(start, TIMESTAMP_FORMAT))
    except (TypeError, ValueError):
        return None
