"""Section 1, machine limits: sustained matmul FLOP/s in fp32 and bf16, the MFU denominators."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from biosae.lm.model import measure_matmul_flops

from .common import Sizes, say


@dataclass
class MachineLimits:
    flops: dict[str, float]  # "fp32" / "bf16" -> matmul FLOP/s
    how: str  # the call that measured them ("dtype" stands for the torch dtype)


def measure_machine_limits(sizes: Sizes) -> MachineLimits:
    """Sustained matmul FLOP/s in fp32 and bf16 (after a short warm-up)."""
    limits = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        measure_matmul_flops(dtype, sizes.matmul_size, min(0.2, sizes.matmul_seconds))
        limits[name] = measure_matmul_flops(dtype, sizes.matmul_size, sizes.matmul_seconds)
        say(f"[machine] {name} matmul {sizes.matmul_size}²: {limits[name] / 1e9:,.1f} GFLOP/s")
    return MachineLimits(
        limits, f"biosae.lm.model.measure_matmul_flops(dtype, size={sizes.matmul_size}, seconds={sizes.matmul_seconds})"
    )
