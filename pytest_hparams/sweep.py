"""Several configurations trained inside one test, for claims that compare them.

``sweep`` takes the same keywords as the ``hparams`` marker, trains each configuration with
``fit`` over its seeds and returns the results in order; inside pytest each configuration is
also a row of a comparison table named after the calling test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .hparams import HParams
from .marker import parse_marker
from .recording import TrialRecorder, current_recorder, recording_into
from .training.fit import fit
from .training.peers import Member, sweep_peers
from .training.sources import ModelSpec
from .trial import TrialResult


def sweep(model: ModelSpec, train: Any, val: Any = None, *, space: Mapping[str, Any],
          **fit_kwargs: Any) -> list[TrialResult]:
    """Train every configuration of ``space`` (marker keywords: axes, ``seeds``, ``samples``,
    ``seed``, ``where``) with ``fit(model, train, val, hparams, **fit_kwargs)``.

    Use a factory ``(hparams) -> Module`` for ``model`` when the architecture varies. A
    configuration whose ``fit`` raises is recorded as failed on its own row and the later ones
    still train (a sweep is there to compare them); then the first error is raised.
    """
    parent = current_recorder()
    name = parent.result.nodeid if parent is not None and parent.result.nodeid else "sweep"
    marker = parse_marker(name, (), space)
    parsed = marker.space
    configs = parsed.expand()
    # Every row is known up front: the first fit trains the rows it can batch, together.
    rows = [Member(c.id, c.id, HParams(c.values, seeds=parsed.seeds, id=c.id, axes=c.axes))
            for c in configs]
    group = sweep_peers(rows, vectorize=marker.vectorize)
    results = []
    first_error: Exception | None = None
    for config, row in zip(configs, rows, strict=True):
        hparams = row.hparams
        if parent is not None:
            recorder = parent.child(config.id, config.values, axes=config.axes,
                                    seeds=parsed.seeds, labels=config.labels)
        else:
            recorder = TrialRecorder(TrialResult(config_id=config.id, hparams=dict(config.values),
                                                 axes=list(config.axes), labels=dict(config.labels),
                                                 seeds=list(parsed.seeds)))
        with recording_into(recorder), group.running(row.key):
            try:
                results.append(fit(model, train, val, hparams, **fit_kwargs))
            except Exception as exc:
                recorder.raised(exc)
                results.append(recorder.result)
                first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return results
