"""Every public error derives from `TokentierError`, keeps its old base, and is importable from
`airflow_provider_tokentier.exceptions`; hooks and backends are found through their registries."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_tokentier import exceptions
from airflow_provider_tokentier.backends import (
    AnthropicBatchBackend,
    AsyncOpenAIBatchBackend,
    async_batch_backend,
    batch_backend,
)
from airflow_provider_tokentier.hooks import TokentierAnthropicHook, TokentierOpenAIHook, provider_hook

OLD_BASES = {
    "RequestValidationError": ValueError,
    "NonFlexModelError": ValueError,
    "LocalStateError": ValueError,
    "AmbiguousSubmissionError": RuntimeError,
    "WorkloadChangedError": RuntimeError,
    "BatchNotEndedError": RuntimeError,
    "SubmitNotSentError": RuntimeError,
    "UnreadableResultsError": RuntimeError,
    "BudgetExceededError": ValueError,
    "PartialResultsError": AirflowException,
    "BatchStuckError": AirflowException,
    "SchemaVersionError": ValueError,
    # Added after TokentierError existed, with the base their kind of error has.
    "InvalidArgumentError": ValueError,
    "JsonlFileError": ValueError,
    "MissingConnectionError": ValueError,
    "BatchPollError": AirflowException,
    "BatchWaitTimeoutError": AirflowException,
}


@pytest.mark.parametrize(("name", "old_base"), sorted(OLD_BASES.items()))
def test_public_errors_share_one_base_and_keep_their_old_one(name, old_base):
    error = getattr(exceptions, name)
    assert issubclass(error, exceptions.TokentierError)
    assert issubclass(error, old_base)
    assert name in exceptions.__all__


def test_every_exported_error_is_a_tokentier_error():
    exported = {name for name in exceptions.__all__ if name != "TokentierError"}
    assert exported == set(OLD_BASES)


def test_hooks_and_backends_dispatch_by_provider():
    assert type(provider_hook("anthropic")) is TokentierAnthropicHook
    assert type(provider_hook("openai", "my_conn")) is TokentierOpenAIHook
    assert provider_hook("openai", "my_conn").conn_id == "my_conn"
    assert type(batch_backend("anthropic", object())) is AnthropicBatchBackend
    assert type(async_batch_backend("openai", object())) is AsyncOpenAIBatchBackend
    with pytest.raises(ValueError, match="provider must be one of \\['anthropic', 'openai'\\]"):
        provider_hook("gemini")
    with pytest.raises(ValueError, match="unknown provider 'gemini'; expected 'anthropic' or 'openai'"):
        batch_backend("gemini", object())
