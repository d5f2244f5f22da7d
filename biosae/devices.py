"""Where torch runs: the one place that reads config ``training.device`` and picks the device.

``auto`` picks CUDA when a GPU is visible, then Apple's MPS, then the CPU, so that one config runs
on a laptop and on a cluster. ``cpu``, ``cuda`` and ``mps`` ask for that device; one that this
machine's torch cannot use is a one-line error naming the key, not a traceback from the first
tensor moved there. Every stage calls :func:`pick_device` (the workflow scripts through their
job's config, the Python API through ``open_run(device=...)``).
"""

from __future__ import annotations

import torch

from biosae.errors import BiosaeError

DEVICES = ("auto", "cpu", "cuda", "mps")
AUTO_ORDER = ("cuda", "mps", "cpu")


def available(device_type: str) -> bool:
    """Whether this machine's torch can run on ``device_type`` (cpu, cuda or mps)."""
    if device_type == "cuda":
        return torch.cuda.is_available()
    if device_type == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return device_type == "cpu"


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The device of ``requested`` (config ``training.device``: auto, cpu, cuda or mps; a
    torch.device or ``"cuda:1"`` as well; None is auto)."""
    if requested is None or requested == "auto":
        return torch.device(next(kind for kind in AUTO_ORDER if available(kind)))
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICES:
        raise BiosaeError(f"config key training.device: {requested!r} is not one of {', '.join(DEVICES)}")
    if not available(device.type):
        raise BiosaeError(
            f"config key training.device: {requested!r} is not available on this machine (try auto or cpu)"
        )
    return device
