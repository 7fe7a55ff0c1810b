"""Shared test setup: pytester for plugin tests, and hypothesis profiles
(``--hypothesis-profile ci``)."""

import os

import torch
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# pytester's in-process runs drop every module first imported during a run; torch registers
# native operator libraries when its compiler stack is imported (by the first optimizer), and a
# second registration fails. Importing that stack here keeps it loaded across runs.
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
