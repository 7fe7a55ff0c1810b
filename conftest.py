"""Shared test setup: pytester for plugin tests, and hypothesis profiles: ``ci`` (derandomized,
so a CI run explores the same examples every time) where ``CI`` is set, as CI services set it,
or with ``HYPOTHESIS_PROFILE=ci``; ``default`` explores new examples on every run."""

import os

import torch
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else
                                    "default"))

# pytester's in-process runs drop every module first imported during a run; torch registers
# native operator libraries when its compiler stack is imported (by the first optimizer), and a
# second registration fails. Importing that stack here keeps it loaded across runs.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
