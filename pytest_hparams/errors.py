"""The exceptions a user can cause, each with a message that says what to change."""

from __future__ import annotations


class HParamsError(Exception):
    """Base class of every error pytest-hparams raises for bad input."""


class HParamsWarning(UserWarning):
    """Something a run did that its table cannot show honestly, short of an error: a key of a
    configuration that nothing read there (``-W error::pytest_hparams.HParamsWarning`` makes
    it fail the test)."""


class SpaceError(HParamsError, ValueError):
    """A marker's search space is invalid; the message names the test and the key."""


class ResultsFileError(HParamsError):
    """A results or baseline file cannot be used; the message names the file."""


class BaselineMissing(ResultsFileError):
    """The baseline a compare names does not exist (yet): no such file or saved run."""


class CompareExpressionError(HParamsError, ValueError):
    """A ``--hparams-compare-fail`` expression or tolerance cannot be parsed."""


class SettingsError(HParamsError, ValueError):
    """A training setting given to ``fit`` (or found in the hparams) is invalid."""


class SearchError(HParamsError, ValueError):
    """``search()`` was given something it cannot search; the message names the test and the
    key."""
