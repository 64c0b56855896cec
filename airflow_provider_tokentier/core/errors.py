"""The errors the pure and SDK layers raise, all under `TokentierError`.

Users import them from :mod:`airflow_provider_tokentier.exceptions`, which re-exports these and
adds the errors that need an Airflow base class. Each error also keeps the built-in base it had
before `TokentierError` existed (``ValueError`` for bad input, ``RuntimeError`` for a state that
refuses to go on), so ``except ValueError`` handlers keep working.
"""

from __future__ import annotations


class TokentierError(Exception):
    """Base of every error tokentier raises on purpose."""


class RequestValidationError(TokentierError, ValueError):
    """A request row that the provider would reject, or that breaks a workload-wide rule.

    ``index`` is the 0-based row number, ``custom_id`` the row's id when it has a usable one, and
    ``reason`` the message without the row prefix (for per-row error reports).
    """

    def __init__(self, index: int, custom_id: str | None, message: str) -> None:
        """Build the error; ``str(error)`` reads ``request #17 (custom_id='doc-17'): <message>``."""
        self.index = index
        self.custom_id = custom_id
        self.reason = message
        super().__init__(f"request #{index} (custom_id={custom_id!r}): {message}")


class InvalidArgumentError(TokentierError, ValueError):
    """An operator or sensor argument that cannot work; ``parameter`` names it.

    ``str(error)`` reads ``<parameter>: <reason>``.
    """

    def __init__(self, parameter: str, reason: str) -> None:
        """Build the error from the parameter's name and what is wrong with its value."""
        self.parameter = parameter
        self.reason = reason
        super().__init__(f"{parameter}: {reason}")


class JsonlFileError(TokentierError, ValueError):
    """A line of a JSONL file that is not one JSON object.

    ``source`` names the file, ``line`` is the 1-based line number (as an editor shows it) and
    ``reason`` the message without the prefix; ``str(error)`` reads ``<source> line 7: <reason>``.
    """

    def __init__(self, source: str, line: int, reason: str) -> None:
        """Build the error from the file's name, the 1-based line number and what is wrong."""
        self.source = source
        self.line = line
        self.reason = reason
        super().__init__(f"{source} line {line}: {reason}")


class MissingConnectionError(TokentierError, ValueError):
    """No API key: the connection does not exist (or has no password) and no ``*_API_KEY`` is set."""


class NonFlexModelError(TokentierError, ValueError):
    """A flex run was asked for a model or endpoint known to have no flex tier (policy "error")."""


class AmbiguousSubmissionError(TokentierError, RuntimeError):
    """A crash left an intent whose batch cannot be told apart from others; refusing to guess."""


class WorkloadChangedError(TokentierError, RuntimeError):
    """The requests differ from those already submitted for this task instance."""


class BatchNotEndedError(TokentierError, RuntimeError):
    """Raised when results are asked for a batch that has not ended yet."""


class SchemaVersionError(TokentierError, ValueError):
    """A manifest or ledger record written by a newer tokentier than the one reading it."""


class LocalStateError(TokentierError, ValueError):
    """Task state would land on one machine's disk while the executor runs tasks on several."""


class SubmitNotSentError(TokentierError, RuntimeError):
    """A batch-creating call that provably created nothing.

    Every attempt either failed to connect (the request never left this machine) or was
    answered with a definite 4xx refusal, so the intent to submit is forgotten: a later try
    submits afresh instead of looking for an orphan that cannot exist. ``__cause__`` is the
    last SDK error.
    """


class UnreadableResultsError(TokentierError, RuntimeError):
    """A results download that is not the provider's JSONL.

    An HTML page served with status 200 by a proxy, or a body that ends in the middle of a
    line. It is downloaded again (bounded); nothing is landed or re-batched from it.
    """


class BudgetExceededError(TokentierError, ValueError):
    """The estimated cost of a workload exceeds ``max_cost_usd``; nothing was sent."""


__all__ = [
    "AmbiguousSubmissionError",
    "BatchNotEndedError",
    "BudgetExceededError",
    "InvalidArgumentError",
    "JsonlFileError",
    "LocalStateError",
    "MissingConnectionError",
    "NonFlexModelError",
    "RequestValidationError",
    "SchemaVersionError",
    "SubmitNotSentError",
    "TokentierError",
    "UnreadableResultsError",
    "WorkloadChangedError",
]
