"""The baseline gate: tolerances, tests over seeds, verdicts, comparison tables, pytest wiring.

``tolerance`` and ``options`` (cheap to import: the marker and the plugin need them) parse
tolerances, the correction and seeds on demand; ``values`` reads per-seed values and statuses
from trials; ``statistics`` (numpy and scipy, imported when a comparison runs) holds the tests:
paired and Welch t-tests, the sequential design, Holm and Benjamini-Hochberg; ``metric_verdict``
judges one metric, ``verdicts`` configurations and runs; ``tables`` renders a comparison;
``hooks`` saves runs, trains seeds on demand and gates test items.
"""
