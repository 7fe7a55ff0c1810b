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
