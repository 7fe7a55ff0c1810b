"""A first end-to-end check: a marked test expands, trains and prints its table."""


def test_grid_runs_and_prints_a_table(pytester):
    pytester.makepyfile(
        """
        import pytest
        import torch
        from pytest_hparams import fit

        X = torch.randn(64, 4)
        Y = (X[:, 0] > 0).long()

        @pytest.mark.hparams(lr=[0.01, 0.1], seeds=2, epochs=3)
        def test_fit(hparams):
            result = fit(lambda: torch.nn.Linear(4, 2), (X, Y), (X, Y), hparams)
            assert len(result.runs) == 2
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_fit?lr=0.01?*PASSED*", "*hyperparameter comparison*"])
