"""Where this process trains: its device and its torch threads, chosen once, when first needed.

Nothing here runs at plugin load: torch is imported only when a test uses the plugin (or torch
is already loaded), so a suite without hyperparameter tests never pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from .devices import (
    DeviceUnavailable,
    cpu_cores,
    device_for_worker,
    parse_devices,
    resolve_device,
    torch_threads,
    torch_version,
)
from .xdist import host_of, planned_workers, worker_id, workers_on_host

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    """This process's device, and why that device cannot be used (a worker's tests then fail
    with that message)."""

    device: torch.device
    problem: str | None = None
    threads: str = ""  # the torch threads chosen, and why


def check_options(config: pytest.Config) -> None:
    """Usage errors that need no torch: both device options at once."""
    if config.getoption("hparams_devices") and config.getoption("hparams_device"):
        raise pytest.UsageError(
            "--hparams-device and --hparams-devices both given: use --hparams-devices to deal "
            "devices to xdist workers, or --hparams-device for one device"
        )


def device_chosen(config: pytest.Config) -> bool:
    """Whether the user named a device (option or ini): it is then checked at start-up."""
    return bool(config.getoption("hparams_devices") or config.getoption("hparams_device")
                or config.getini("hparams_device") not in ("", "auto"))


def place_process(config: pytest.Config) -> Placement:
    """Choose this process's device (``--hparams-devices`` round-robin by worker index, else
    ``--hparams-device``) and set its torch threads (``--hparams-threads``).

    An unusable device is a pytest.UsageError naming the option, checked where the tests run:
    in this process, or by the controller for workers on this host. A worker on another host
    records the problem instead of crashing, and its tests fail with it.
    """
    import torch

    devices_spec = config.getoption("hparams_devices")
    device_spec = config.getoption("hparams_device")
    threads, why = torch_threads(config.getoption("hparams_threads"), workers_on_host(config),
                                 torch.get_num_threads())
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    count = torch.get_num_threads()
    chosen = f"{count} torch thread{'s' if count != 1 else ''} ({why})"
    try:
        if devices_spec:
            device = device_for_worker(parse_devices(devices_spec), worker_id(config))
        else:
            device = resolve_device(device_spec or config.getini("hparams_device"))
    except DeviceUnavailable as exc:
        option = "--hparams-devices" if devices_spec else "--hparams-device"
        if worker_id(config) is not None:
            problem = f"{option} on xdist worker {worker_id(config)}: {exc}"
            return Placement(torch.device("cpu"), problem, chosen)
        if all(host_of(spec) == "local" for spec in planned_workers(config)):
            raise pytest.UsageError(f"{option}: {exc}") from None
        # Remote workers have devices of their own; each checks its own.
        device = torch.device("cpu")
    return Placement(device, threads=chosen)


def _torch_version() -> str:
    return torch_version() or "not installed"


def describe(config: pytest.Config, placement: Placement | None) -> str:
    """The report header's line: torch, the device (``auto`` until something needed it), the
    xdist workers, their devices and torch threads."""
    specs = planned_workers(config)
    shown = str(placement.device) if placement else "auto (cuda, else mps, else cpu)"
    if not specs:
        if placement is None:
            return f"device {shown}, torch {_torch_version()} (loaded when a test needs it)"
        return f"device {shown}, torch {_torch_version()}, {placement.threads}"
    local = sum(host_of(spec) == "local" for spec in specs)
    parts = [f"{len(specs)} xdist worker{'s' if len(specs) != 1 else ''}"]
    devices_spec = config.getoption("hparams_devices")
    if not devices_spec:
        parts.append(f"device {shown}")
    else:
        try:
            devices = parse_devices(devices_spec)
        except DeviceUnavailable:
            parts.append(f"devices {devices_spec} dealt round-robin")
        else:
            dealt = ", ".join(f"gw{i} {device_for_worker(devices, f'gw{i}')}"
                              for i in range(len(specs)))
            parts.append(f"devices {dealt}")
    choice = config.getoption("hparams_threads")
    if local:
        threads_each, _ = torch_threads(choice, local, default=cpu_cores())
        plural = "s" if threads_each != 1 else ""
        if threads_each is None:
            parts.append("torch threads: torch's default in each worker")
        elif isinstance(choice, int):
            parts.append(f"{threads_each} torch thread{plural} per worker")
        else:
            parts.append(f"{threads_each} torch thread{plural} per worker "
                         f"({cpu_cores()} cores ÷ {local} local workers)")
    return f"torch {_torch_version()}, " + ", ".join(parts)
