"""Every error tokentier raises on purpose, under one base: `TokentierError`.

``except TokentierError`` catches them all. Each also keeps the base its callers relied on before:
bad input is a ``ValueError`` (`RequestValidationError`, `NonFlexModelError`, `LocalStateError`,
`BudgetExceededError`), a state that refuses to go on is a ``RuntimeError`` (`WorkloadChangedError`,
`AmbiguousSubmissionError`, `BatchNotEndedError`, `SubmitNotSentError`, `UnreadableResultsError`),
and the two errors a waiting task fails with are ``AirflowException`` s
(`PartialResultsError`, `BatchStuckError`), which Airflow reports without a traceback.

Where they live: the pure and SDK layers may not import Airflow, so their errors and the base are
defined in :mod:`airflow_provider_tokentier.core.errors`; errors that need an Airflow base are
defined here (with `TokentierError` first in the bases). New public errors go in one of those two
places by the same rule, and are exported here.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException

from airflow_provider_tokentier.core.errors import (
    AmbiguousSubmissionError,
    BatchNotEndedError,
    BudgetExceededError,
    LocalStateError,
    NonFlexModelError,
    RequestValidationError,
    SchemaVersionError,
    SubmitNotSentError,
    TokentierError,
    UnreadableResultsError,
    WorkloadChangedError,
)


class PartialResultsError(TokentierError, AirflowException):
    """Some requests did not succeed and ``fail_on_partial`` is set; the rows still landed."""


class BatchStuckError(TokentierError, AirflowException):
    """A batch stopped moving (finalizing/canceling/no progress) for longer than ``stuck_after``."""


__all__ = [
    "AmbiguousSubmissionError",
    "BatchNotEndedError",
    "BatchStuckError",
    "BudgetExceededError",
    "LocalStateError",
    "NonFlexModelError",
    "PartialResultsError",
    "RequestValidationError",
    "SchemaVersionError",
    "SubmitNotSentError",
    "TokentierError",
    "UnreadableResultsError",
    "WorkloadChangedError",
]
