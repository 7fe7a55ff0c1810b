"""Device choice and availability: auto, cpu, cuda, cuda:N, mps."""

from __future__ import annotations

import re

import torch

from .errors import HParamsError

_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(:(\d+))?$")


class DeviceUnavailable(HParamsError):
    """The requested device does not exist on this machine or in this torch build."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def auto_device() -> torch.device:
    """cuda if available, else mps, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into an available ``torch.device``.

    Raises DeviceUnavailable with the reason when it cannot be used here.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    match = _SPEC.match(text)
    if not match:
        raise DeviceUnavailable(
            f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps"
        )
    kind, index = match.group(1), match.group(3)
    if kind == "auto":
        if index is not None:
            raise DeviceUnavailable(f"unknown device {spec!r}: 'auto' takes no index")
        return auto_device()
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "with" if torch.backends.cuda.is_built() else "without"
            raise DeviceUnavailable(
                f"device {spec!r} is not available: torch {torch.__version__} was built {built} "
                f"CUDA and sees no CUDA GPU"
            )
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise DeviceUnavailable(
                f"device {spec!r} is not available: this machine has {count} CUDA "
                f"device(s), cuda:0..cuda:{count - 1}"
            )
    elif kind == "mps" and not _mps_available():
        raise DeviceUnavailable(f"device {spec!r} is not available: no Apple MPS backend here")
    elif kind == "cpu" and index is not None:
        raise DeviceUnavailable(f"unknown device {spec!r}: 'cpu' takes no index")
    return torch.device(text)


def runtime_description(device: torch.device) -> str:
    """One line for the report header: device, torch version, thread count."""
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} threads"
