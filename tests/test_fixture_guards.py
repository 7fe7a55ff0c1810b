"""The plugin's fixtures and marker cannot be silently bypassed: a shadowing fixture, a test
reading ``hparams`` without a marker, and a misspelt marker are each told so by name."""

import pytest

TEST = """
import pytest

@pytest.mark.hparams(lr=[0.01, 0.1])
def test_lr(hparams):
    assert hparams.lr in (0.01, 0.1)
"""


def test_a_conftest_fixture_named_hparams_is_refused_naming_both_definitions(pytester):
    pytester.makeconftest("""
import pytest

@pytest.fixture
def hparams():
    return {"lr": 0.1}
""")
    pytester.makepyfile(test_x=TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*test_x.py::test_lr?lr=0.01?: the fixture 'hparams' defined at *conftest.py:3 hides "
        "pytest-hparams' fixture 'hparams' (*plugin.py:*)*rename your fixture*",
    ])


@pytest.mark.parametrize("name", ["hparams_device", "hparams_trial"])
def test_the_other_fixtures_cannot_be_shadowed_either(pytester, name):
    pytester.makeconftest(f"""
import pytest

@pytest.fixture
def {name}():
    return None
""")
    pytester.makepyfile(test_x=f"""
import pytest

@pytest.mark.hparams(lr=[0.1])
def test_lr({name}):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*the fixture '{name}' defined at *conftest.py:3 hides*"])


def test_an_override_that_builds_on_the_plugins_fixture_is_allowed(pytester):
    pytester.makeconftest("""
import pytest

@pytest.fixture
def hparams(hparams):
    return hparams
""")
    pytester.makepyfile(test_x=TEST)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_same_named_fixture_does_not_concern_tests_without_the_marker(pytester):
    pytester.makeconftest("""
import pytest

@pytest.fixture
def hparams():
    return {"lr": 0.5}
""")
    pytester.makepyfile(test_x="""
def test_plain(hparams):
    assert hparams["lr"] == 0.5
""")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_reading_hparams_without_a_marker_names_the_test_and_the_missing_marker(pytester):
    pytester.makepyfile(test_x="""
def test_lr(hparams):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_x.py::test_lr requests the fixture 'hparams' but no "
                                 "@pytest.mark.hparams marker applies to it*"])


@pytest.mark.parametrize("typo", ["hparam", "hparms", "hpárams"])
def test_a_misspelt_marker_is_a_collection_error_naming_it(pytester, typo):
    pytester.makepyfile(test_x=f"""
import pytest

@pytest.mark.{typo}(lr=[0.01, 0.1])
def test_lr():
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*test_x.py::test_lr: unknown marker @pytest.mark.{typo}: "
                                 f"did you mean @pytest.mark.hparams?*"])


def test_unrelated_markers_are_left_alone(pytester):
    pytester.makeini("[pytest]\nmarkers = params\n    slow\n")
    pytester.makepyfile(test_x="""
import pytest

@pytest.mark.slow
@pytest.mark.params
def test_lr():
    pass
""")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


UNREAD = """
import pytest
import torch
from pytest_hparams import fit

torch.manual_seed(0)
X = torch.randn(64, 4)
Y = (X[:, 0] > 0).long()


def net(width):
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(),
                               torch.nn.Linear(width, 2))


@pytest.mark.hparams(optimiser=["sgd", "adam"], lr=[0.05, 0.1], epochs=2, seeds=2)
def test_typo(hparams):
    fit(lambda: net(8), (X, Y), None, hparams)


@pytest.mark.hparams(width=[4, 8], lr=[0.05, 0.1], epoch=2)
def test_constant_typo(hparams):
    fit(lambda hp: net(hp.width), (X, Y), None, hparams)


@pytest.mark.hparams(width=[4, 8, 16], lr=[0.05, 0.1], epochs=2, seeds=2)
def test_factory_reads(hparams):
    fit(lambda hp: net(hp["width"]), (X, Y), None, hparams)


@pytest.mark.hparams(width=[4, 8], epochs=2)
def test_closure_reads(hparams):
    fit(lambda: net(hparams.width), (X, Y), None, hparams, vectorize=False)


@pytest.mark.hparams(width=[4, 8], note="a label")
def test_handed_on_whole(hparams, hparams_trial):
    settings = dict(hparams)
    for run in hparams_trial.runs():
        run.log_epoch(accuracy=settings["width"] / 10)


@pytest.mark.hparams(width=[4, 8], epochs=3)
def test_own_loop_ignores_epochs(hparams, hparams_trial):
    for run in hparams_trial.runs():
        run.log_epoch(accuracy=hparams.get("width") / 10)


@pytest.mark.hparams(width=[4, 8], depth=2)
def test_fails_for_its_own_reason(hparams):
    assert hparams.width > 100
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["one process", "xdist"])
def test_a_key_nothing_reads_fails_its_test_if_misspelt_and_warns_otherwise(pytester, args):
    """A row must not show a value that changed nothing: a key that neither the test, its model
    factory nor fit read fails the item when it looks like a misspelt fit setting, and warns
    otherwise, whether a stack's leader built the item's model or not."""
    pytester.makepyfile(test_unread=UNREAD)
    result = pytester.runpytest("--hparams-no-table", *args)
    result.assert_outcomes(passed=6 + 2 + 2 + 2, failed=4 + 4 + 2, warnings=2)
    out = result.stdout.str()
    for line in (  # in any order: xdist reports failures as the workers finish them
        "*test_typo[[]optimiser=adam-lr=0.1[]]: the marker gives optimiser='adam' (did you mean "
        "'optimizer'?), but nothing read it: not the test, not its model factory, not fit, "
        "whose settings are optimizer, lr, *",
        "*test_constant_typo[[]width=4-lr=0.05[]]: the marker gives epoch=2 (did you mean "
        "'epochs'?)*",
        "*HParamsWarning: *test_own_loop_ignores_epochs[[]width=8[]]: the marker gives "
        "epochs=3, but nothing read it in this configuration*",
    ):
        result.stdout.fnmatch_lines([line])
    for passed in ("test_factory_reads", "test_closure_reads", "test_handed_on_whole"):
        assert f"FAILED test_unread.py::{passed}" not in out
    # a test that fails on its own keeps its own failure
    assert "assert 4 > 100" in out and "the marker gives depth=2" not in out
    strict = pytester.runpytest("--hparams-no-table", "-k", "own_loop", *args,
                                "-W", "error::pytest_hparams.HParamsWarning")
    strict.assert_outcomes(failed=2)


def test_a_configuration_handed_on_whole_counts_every_key_as_read():
    """Pickled (a DataLoader worker's copy), copied or spread into a dict: what happens to the
    values there cannot be seen, so every key counts as used."""
    import copy
    import pickle

    from pytest_hparams import HParams
    from pytest_hparams.hparams import observe

    for hand_on in (pickle.dumps, copy.deepcopy, dict, lambda hp: {**hp}, lambda hp: hp == {}):
        reads: set[str] = set()
        hand_on(observe(HParams({"lr": 0.1, "width": 8}), reads))
        assert reads == {"lr", "width"}
    reads = set()
    hp = observe(HParams({"lr": 0.1, "width": 8}), reads)
    assert hp.lr == 0.1 and hp.get("nope") is None and "width" not in reads
