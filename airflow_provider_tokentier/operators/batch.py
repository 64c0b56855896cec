"""`BatchSubmitOperator`: validate, chunk and submit a workload to a provider's batch API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from airflow_provider_tokentier.core.budget import check_max_cost
from airflow_provider_tokentier.core.chunking import DEFAULT_SAFETY_MARGIN
from airflow_provider_tokentier.core.progress import ProgressRecord
from airflow_provider_tokentier.links import ProviderBatchLink, TokentierViewLink
from airflow_provider_tokentier.runtime.arguments import ArgumentChecks
from airflow_provider_tokentier.runtime.batch_submit import submit_workload
from airflow_provider_tokentier.runtime.dag_stages import SUBMIT_ROLE
from airflow_provider_tokentier.runtime.reporting import StepReporter
from airflow_provider_tokentier.runtime.task_state import state_dir_for, task_key
from airflow_provider_tokentier.workflow.gate import BatchGate, GateSettings
from airflow_provider_tokentier.workflow.submission import open_request_rows


class BatchSubmitOperator(BaseOperator):
    """Submit LLM requests to Anthropic Message Batches or the OpenAI Batch API, at half price.

    Every row is validated before anything is sent (a bad row fails the task naming it, with
    nothing submitted). Rows are streamed into chunk files under the provider's count and byte
    caps, then each chunk is submitted with an intent recorded before the paid call and the
    batch id right after, so retries, clears and worker crashes never submit a batch twice.
    Returns the submission manifest (small JSON) for `BatchSensor`.

    :param provider: ``"anthropic"`` or ``"openai"``.
    :param requests: request rows (a list or an XCom), provider-native: Anthropic
        ``{"custom_id", "params"}``; OpenAI ``{"custom_id", "method", "url", "body"}`` where
        ``method``/``url`` may be omitted. Give this or ``requests_uri``.
    :param requests_uri: a JSONL file of request rows on any ObjectStoragePath URI
        (``file://``, ``s3://``, ...); streamed, never loaded whole. Templated.
    :param conn_id: Airflow connection id (default ``anthropic_default`` / ``openai_default``);
        without such a connection the SDK's environment variables apply.
    :param endpoint: OpenAI batch endpoint for rows without ``url`` (e.g. ``/v1/chat/completions``);
        inferred from the first row when omitted. Ignored for Anthropic.
    :param model: default model for rows that do not name one.
    :param state_root: where the ledger and chunk files live (default ``[tokentier] state_root``,
        else ``$AIRFLOW_HOME/tokentier``); any ObjectStoragePath URI.
    :param max_requests_per_batch: override the provider's request cap (100,000 / 50,000).
    :param max_bytes_per_batch: override the provider's byte cap (256 MB / 200 MB).
    :param max_embedding_inputs_per_batch: override OpenAI's 50,000 embedding-inputs cap.
    :param safety_margin: share of the byte cap to fill (default 0.95).
    :param max_cost_usd: spend cap in USD (default None: no cap). The workload's batch-tier cost
        is estimated (input from the request bodies, output from each request's own cap) and a
        workload estimated above it is refused before anything is submitted. The cap travels in
        the manifest to `BatchSensor`, which holds re-batch rounds and rescues to it.
    :param prices: price overrides (dict, JSON string or path) for that estimate.
    """

    template_fields: Sequence[str] = ("requests", "requests_uri", "model", "endpoint", "state_root")
    ui_color = "#e8d5f5"
    #: How chain planning (:mod:`~airflow_provider_tokentier.runtime.dag_stages`) sees this task.
    batch_stage_role: ClassVar[str] = SUBMIT_ROLE
    operator_extra_links = (ProviderBatchLink(), TokentierViewLink())

    def __init__(
        self,
        *,
        provider: str,
        requests: Any = None,
        requests_uri: str | None = None,
        conn_id: str | None = None,
        endpoint: str | None = None,
        model: str | None = None,
        state_root: str | None = None,
        max_requests_per_batch: int | None = None,
        max_bytes_per_batch: int | None = None,
        max_embedding_inputs_per_batch: int | None = None,
        safety_margin: float = DEFAULT_SAFETY_MARGIN,
        max_cost_usd: float | None = None,
        prices: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_cost_usd = check_max_cost(max_cost_usd)
        self.prices = prices
        self.provider = provider
        self.requests = requests
        self.requests_uri = requests_uri
        self.conn_id = conn_id
        self.endpoint = endpoint if provider == "openai" else None
        self.model = model
        self.state_root = state_root
        self.caps = {
            "max_requests": max_requests_per_batch,
            "max_bytes": max_bytes_per_batch,
            "max_embedding_inputs": max_embedding_inputs_per_batch,
        }
        self.safety_margin = safety_margin
        self._check_arguments(ArgumentChecks(rendered=False))

    def _check_arguments(self, check: ArgumentChecks) -> None:
        """Parse time: every argument but unrendered templates; run time: the rendered ones too."""
        check.workload(self.provider, self.requests, self.requests_uri, self.endpoint)
        check.text("conn_id", self.conn_id)
        check.text("model", self.model)
        check.text("state_root", self.state_root)
        for cap, value in self.caps.items():
            check.number(f"{cap}_per_batch", value, minimum=1, inclusive=True, integer=True, optional=True)
        check.fraction("safety_margin", self.safety_margin, low_open=True)
        check.prices(self.prices)

    def _open_rows(self) -> Iterable[Mapping[str, Any]]:
        return open_request_rows(self.requests, self.requests_uri)

    def execute(self, context: Context) -> dict[str, Any]:
        """Validate, chunk and submit the workload; return the submission manifest."""
        self._check_arguments(ArgumentChecks(rendered=True))
        report = StepReporter(context, operator=type(self).__name__, log=self.log)
        report.publish(
            ProgressRecord(
                operator=report.operator,
                provider=self.provider,
                model=self.model,
                tier="batch",
                phase="submitting",
            )
        )
        submission = submit_workload(
            context,
            self._open_rows,
            provider=self.provider,
            conn_id=self.conn_id,
            endpoint=self.endpoint,
            model=self.model,
            state_root=self.state_root,
            caps=self.caps,
            safety_margin=self.safety_margin,
            log=self.log,
            max_cost_usd=self.max_cost_usd,
            prices=self.prices,
        )
        # The batches now wait at the provider; the sensor downstream takes the record from here.
        gate = BatchGate(
            manifest=submission,
            state_dir=state_dir_for(context, self.state_root),
            settings=GateSettings(provider=self.provider),
            task_key=task_key(context),
        )
        report.batch_step(gate, "waiting", max_rounds=None)
        return submission
