"""Every error tokentier raises on purpose, under one base: `TokentierError`.

``except TokentierError`` catches them all. Each also keeps the base its callers relied on before:
bad input is a ``ValueError`` (`RequestValidationError`, `NonFlexModelError`, `LocalStateError`),
a state that refuses to go on is a ``RuntimeError`` (`WorkloadChangedError`, `AmbiguousSubmissionError`,
`BatchNotEndedError`), and the two errors a waiting task fails with are ``AirflowException`` s
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
    LocalStateError,
    NonFlexModelError,
    RequestValidationError,
    SchemaVersionError,
    TokentierError,
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
    "LocalStateError",
    "NonFlexModelError",
    "PartialResultsError",
    "RequestValidationError",
    "SchemaVersionError",
    "TokentierError",
    "WorkloadChangedError",
]
