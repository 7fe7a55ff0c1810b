"""The baseline gate: tolerances, verdicts over seeds, comparison tables and pytest wiring.

``tolerance`` (cheap to import: the marker needs it) parses tolerances; ``verdicts`` compares
runs under them; ``tables`` renders a comparison; ``hooks`` saves runs and gates test items.
"""
