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

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # Airflow 3.1: not in the Task SDK yet
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[attr-defined,no-redef,unused-ignore]

from airflow_provider_tokentier.core.errors import (
    AmbiguousSubmissionError,
    BatchNotEndedError,
    BudgetExceededError,
    InvalidArgumentError,
    JsonlFileError,
    LocalStateError,
    MissingConnectionError,
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


class BatchPollError(TokentierError, AirflowException):
    """The wait could not poll the provider.

    A non-transient error, or transient ones (429, 5xx, connection errors) for longer than
    ``poll_error_patience``. The message names the provider, the batches and the last error.
    """


class BatchWaitTimeoutError(TokentierError, AirflowSensorTimeout):
    """The wait took longer than its timeout.

    The sensor's ``timeout`` or the operator's ``wait_timeout``; the batches keep running at the
    provider. Not retried, like any sensor timeout.
    """


__all__ = [
    "AmbiguousSubmissionError",
    "BatchNotEndedError",
    "BatchPollError",
    "BatchStuckError",
    "BatchWaitTimeoutError",
    "BudgetExceededError",
    "InvalidArgumentError",
    "JsonlFileError",
    "LocalStateError",
    "MissingConnectionError",
    "NonFlexModelError",
    "PartialResultsError",
    "RequestValidationError",
    "SchemaVersionError",
    "SubmitNotSentError",
    "TokentierError",
    "UnreadableResultsError",
    "WorkloadChangedError",
]
