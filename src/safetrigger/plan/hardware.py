"""Accelerators the cost model knows: peak dense bf16 throughput, memory bandwidth, memory.

Every number is the vendor's datasheet figure (dense, i.e. without 2:4 sparsity), named in
``source``. Sustained rates are lower; the share assumed to be reached is in
``safetrigger.plan.cost.ASSUMPTIONS``, not here. ``--hardware`` takes ``[COUNTxx]NAME``,
e.g. ``8xH100-80GB`` (count 1 when omitted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from safetrigger.errors import ConfigError


@dataclass(frozen=True)
class Accelerator:
    name: str
    bf16_tflops: float
    """Peak dense bf16 tensor throughput, TFLOP/s."""
    bandwidth_tbs: float
    """Peak memory bandwidth, TB/s."""
    memory_gib: float
    """Memory per device, GiB (what a process can address)."""
    source: str
    gpu: bool = True


ACCELERATORS = {a.name: a for a in [
    Accelerator("H100-80GB", 989.0, 3.35, 80, "NVIDIA H100 Tensor Core GPU datasheet, SXM5: 989 TFLOPS bf16 dense (1979 with sparsity), 3.35 TB/s HBM3, 80 GB"),
    Accelerator("H100-PCIe-80GB", 756.0, 2.0, 80, "NVIDIA H100 datasheet, PCIe: 756 TFLOPS bf16 dense (1513 with sparsity), 2.0 TB/s HBM2e, 80 GB"),
    Accelerator("H200-141GB", 989.0, 4.8, 141, "NVIDIA H200 Tensor Core GPU datasheet, SXM: 989 TFLOPS bf16 dense, 4.8 TB/s HBM3e, 141 GB"),
    Accelerator("A100-80GB", 312.0, 2.0, 80, "NVIDIA A100 Tensor Core GPU datasheet, SXM4 80GB: 312 TFLOPS bf16 dense (624 with sparsity), 2.039 TB/s HBM2e"),
    Accelerator("A100-40GB", 312.0, 1.555, 40, "NVIDIA A100 Tensor Core GPU datasheet, 40GB: 312 TFLOPS bf16 dense, 1.555 TB/s HBM2"),
    Accelerator("L40S-48GB", 362.05, 0.864, 48, "NVIDIA L40S datasheet: 362.05 TFLOPS bf16 dense (733 with sparsity), 864 GB/s GDDR6, 48 GB"),
    # The machine the demo timings in README were measured on. Peak: AMX-BF16 does 1024 bf16
    # multiply-adds (2048 FLOPs) per cycle per core (Intel 64 and IA-32 Optimization Reference
    # Manual, AMX chapter) x 2 cores x 2.6 GHz (the TSC rate lscpu reports). Bandwidth: measured
    # on that VM with a 1 GiB numpy copy (bytes read + written per second) (see README "Running at paper scale").
    Accelerator("cpu-2core-xeon-amx", 10.6, 0.025, 23, "2-core KVM Intel Xeon with AMX-BF16: 2 cores x 2.6 GHz x 2048 bf16 FLOPs/cycle; 25 GB/s measured copy bandwidth (read + write, one thread); 23 GiB RAM", gpu=False),
]}


@dataclass(frozen=True)
class Hardware:
    count: int
    device: Accelerator

    @property
    def label(self) -> str:
        return f"{self.count}x{self.device.name}"


def parse_hardware(spec: str) -> Hardware:
    """``"8xH100-80GB"`` -> 8 x H100-80GB; an unknown name is refused with the known ones."""
    m = re.fullmatch(r"(?:(\d+)\s*[xX*]\s*)?(.+)", spec.strip())
    count, name = int(m.group(1) or 1), m.group(2).strip()
    by_lower = {k.lower(): v for k, v in ACCELERATORS.items()}
    if name.lower() not in by_lower:
        raise ConfigError(f"unknown hardware {name!r} in --hardware {spec!r}; known: {', '.join(ACCELERATORS)} "
                          f"(e.g. --hardware 8xH100-80GB)")
    if count < 1:
        raise ConfigError(f"--hardware needs at least one device, got {spec!r}")
    return Hardware(count, by_lower[name.lower()])
