"""What the benchmarks print beside every figure: the CPU they ran on (speed differs between
hosts of one kind, so a number without its CPU means little)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
