"""The gate's run-level settings: the correction over a run's tests and seeds on demand.

``argparse`` types shared by ``pytest --hparams-compare-*`` and ``pytest-hparams compare``, so
that a bad value is an early, readable error in both. Importing this module is cheap.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

#: The corrections over the tests of one run, by option value, with how a report names them.
CORRECTIONS = {
    "bh": "Benjamini-Hochberg",
    "holm": "Holm",
    "none": "no correction",
}
#: Benjamini-Hochberg: when nothing regressed (most CI runs) it bounds the chance of any false
#: alarm at alpha, as Holm does; when a change does hurt, it usually hurts many configurations,
#: and BH reports far more of them (benchmarks/gate_power.py measures both).
DEFAULT_CORRECTION = "bh"

#: Each look trains this factor more seeds than the last (3, 5, 8, 12, 18, ...): few looks keep
#: each one's share of alpha large, and each round trains several seeds as one vectorised stack.
LOOK_GROWTH = 1.5


def correction_option(text: str) -> str:
    """``argparse`` type of ``--hparams-compare-correction`` and ``compare --correction``."""
    value = str(text).strip().lower()
    if value not in CORRECTIONS:
        raise argparse.ArgumentTypeError(
            f"the correction must be one of {', '.join(CORRECTIONS)} (bh: Benjamini-Hochberg, "
            f"holm: Holm, none: each configuration at alpha), got {text!r}")
    return value


def correction_label(method: str, tests: int, *, alone: bool = False) -> str:
    """``Benjamini-Hochberg over 60 tests``, or ``no correction``. ``alone``: one test judged
    before the rest of the run is known, as if every other p-value were 1."""
    if method == "none":
        return "no correction over the run's tests"
    text = f"{CORRECTIONS[method]} over {tests} test{'s' if tests != 1 else ''}"
    if alone and tests > 1:
        text += " (this item judged alone, before the rest of the run: the run's table adjusts "
        text += "with every test's p)"
    return text


@dataclass(frozen=True)
class SeedsOnDemand:
    """``--hparams-compare-seeds=MIN:MAX``: each configuration trains ``least`` seeds, then more
    at looks after 1.5 times as many, up to ``most``, while its verdict is undecided."""

    least: int
    most: int

    def __str__(self) -> str:
        return f"{self.least}:{self.most}"

    def plan(self, marker_seeds: tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """The seeds, in training order: the marker's, continued with the integers after the
        largest of them when it names fewer than ``most``."""
        seeds = list(marker_seeds)[: self.most]
        after = max(seeds, default=-1) + 1
        while len(seeds) < self.most:
            seeds.append(after)
            after += 1
        return tuple(seeds)

    def looks(self, most: int | None = None) -> tuple[int, ...]:
        """The seed counts at which the verdict is looked at, up to ``most`` (default the
        option's): ``least``, then 1.5 times the last (rounded up), then ``most``."""
        top = self.most if most is None else min(most, self.most)
        if top < self.least:
            return ()
        looks = [self.least]
        while looks[-1] < top:
            looks.append(min(top, max(looks[-1] + 1, math.ceil(looks[-1] * LOOK_GROWTH))))
        return tuple(looks)


_SEEDS = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def seeds_option(text: str) -> SeedsOnDemand:
    """``argparse`` type of ``--hparams-compare-seeds``: ``MIN:MAX`` with 2 <= MIN <= MAX."""
    match = _SEEDS.match(str(text))
    least, most = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or least < 2 or most < least or most > 10_000:
        raise argparse.ArgumentTypeError(
            f"write MIN:MAX with 2 <= MIN <= MAX <= 10000, e.g. 3:8 (each configuration trains "
            f"3 seeds, and up to 8 while its verdict is unsure), got {text!r}")
    return SeedsOnDemand(least, most)
