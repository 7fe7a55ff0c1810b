"""Devices: choice and availability, one device per xdist worker, torch threads per worker."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HParamsError

if TYPE_CHECKING:
    import torch

_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(:(\d+))?$")


class DeviceUnavailable(HParamsError):
    """The requested device does not exist on this machine or in this torch build."""


def torch_build() -> tuple[str | None, str | None]:
    """torch's version and CUDA build (``torch.__version__``, ``torch.version.cuda``; None and
    None without torch), read without importing torch where it is not loaded yet (an xdist
    controller, the report header): the version from the package's metadata, the CUDA build
    from the literals of torch's generated ``version.py``. Importing torch only to name its
    build would cost a second, and unloading it at exit more."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.__version__, torch.version.cuda
    version = torch_version()
    if version is None:
        return None, None
    spec = importlib.util.find_spec("torch")  # a top-level package: found, not imported
    for folder in (spec.submodule_search_locations or ()) if spec is not None else ():
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            found = _literals(Path(folder, "version.py").read_text(encoding="utf-8"))
            if "cuda" in found:
                return version, found["cuda"]
    import torch  # a build whose version file says nothing of CUDA: ask torch itself

    return version, torch.version.cuda


def torch_version() -> str | None:
    """torch's version (None without torch), without importing it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _literals(source: str) -> dict[str, Any]:
    """The names a module assigns literal values to at its top level."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            with contextlib.suppress(ValueError):
                found[target.id] = ast.literal_eval(value)
    return found


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def auto_device() -> torch.device:
    """cuda if available, else mps, else cpu."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into an available ``torch.device``.

    Raises DeviceUnavailable with the reason when it cannot be used here.
    """
    import torch

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
    import torch

    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} threads"


# --------------------------------------------------------------------------- several processes


def parse_devices(spec: str) -> list[torch.device]:
    """The devices of ``--hparams-devices``: ``auto`` (every visible CUDA GPU; without one, the
    ``auto`` device) or a comma-separated list such as ``cuda:0,cuda:1``.

    Raises DeviceUnavailable naming the entry that cannot be used here.
    """
    import torch

    text = str(spec).strip()
    if text.lower() == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
        return [auto_device()]
    entries = [entry.strip() for entry in text.split(",")]
    if not text or not all(entries):
        raise DeviceUnavailable(
            f"{spec!r} is not a list of devices: give auto or names separated by commas, "
            f"such as cuda:0,cuda:1"
        )
    return [resolve_device(entry) for entry in entries]


def worker_index(worker_id: str | None) -> int:
    """The index of an xdist worker id (``gw3`` → 3); 0 outside xdist."""
    match = re.fullmatch(r"gw(\d+)", worker_id or "")
    return int(match.group(1)) if match else 0


def device_for_worker(devices: list[torch.device], worker_id: str | None) -> torch.device:
    """The device of one worker: the devices are dealt round-robin by worker index."""
    if not devices:
        raise ValueError("device_for_worker needs at least one device")
    return devices[worker_index(worker_id) % len(devices)]


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def thread_budget(workers: int, cores: int | None = None) -> int:
    """torch threads for each of ``workers`` processes sharing ``cores``: cores ÷ workers, at
    least 1, so that parallel workers do not oversubscribe the CPU."""
    cores = cpu_cores() if cores is None else cores
    return max(1, cores // max(1, workers))


#: The most torch threads ``--hparams-threads`` accepts (torch takes a C int; no machine has
#: more cores than this).
MAX_THREADS = 1024


def parse_threads(text: str) -> int | str:
    """``--hparams-threads``: ``auto``, ``off`` or a number of threads from 1 to MAX_THREADS."""
    value = str(text).strip().lower()
    if value in ("auto", "off"):
        return value
    if value.isascii() and value.isdigit() and len(value) <= 20 and 0 < int(value) <= MAX_THREADS:
        return int(value)
    shown = repr(text) if len(str(text)) <= 40 else repr(str(text)[:40]) + "…"
    raise ValueError(
        f"{shown} is not a thread count: give a whole number from 1 to {MAX_THREADS}, auto "
        f"(cores ÷ xdist workers on this host) or off (torch's own default)"
    )


def busy_cores() -> float:
    """How many cores other processes keep busy: the 1-minute load average (0 where the OS
    keeps none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def torch_threads(choice: int | str, workers_on_host: int, default: int,
                  busy: float | None = None) -> tuple[int | None, str]:
    """The torch thread count a process should set (None: leave torch's ``default``), and why.

    ``auto`` budgets cores ÷ workers when several xdist workers share this host. A lone process
    keeps torch's default (a thread per core) on a quiet machine, and takes only the cores that
    are free when the load average says others are busy: torch's threads wait for each other at
    every operation, so one descheduled thread stalls them all (on a busy 2-core machine two
    threads made the quick start 3-4 times slower than one: ``benchmarks/threads_default.py``).
    A number is used as it is; ``off`` leaves torch's default.
    """
    if isinstance(choice, int):
        return choice, "--hparams-threads"
    if choice != "auto":
        return None, "torch's default, --hparams-threads off"
    cores = cpu_cores()
    if workers_on_host > 1:
        return thread_budget(workers_on_host), f"{cores} cores ÷ {workers_on_host} local workers"
    busy = busy_cores() if busy is None else busy
    free = max(1, int(cores - busy + 0.5))
    if free >= default:
        return None, f"torch's default; load average {busy:.1f} on {cores} cores"
    return free, f"auto: load average {busy:.1f} on {cores} cores leaves {free} free"
