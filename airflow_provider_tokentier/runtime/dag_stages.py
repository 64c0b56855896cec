"""Chain planning on a real DAG: find its batch stages and how they chain (Airflow glue).

A **batch stage** is a `BatchSubmitOperator` with the `BatchSensor` that waits on it (paired
through the sensor's ``submission=submit.output``), a lone sensor given ``batch_ids``, a submit
no sensor waits on, or a `TieredInferenceOperator` that is batch-bound: its ``tier`` is forced to
``"batch"`` or it declares ``chained_batch_stages > 1``. Other tiered tasks are routed at run time
and are only mentioned. Two stages chain when one is upstream of the other.

The arithmetic (cumulative p50/p95, deadline checks, rendering) is pure and lives in
:mod:`airflow_provider_tokentier.core.chain_plan`; this module reads the operators' attributes:
provider and model, static deadlines, rescue tiers, static request rows (for costs), and the
turnaround history under the stage's state root.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_tokentier.core.chain_plan import (
    BatchStage,
    ChainPlan,
    Deadline,
    find_chains,
    longest_chain,
    parse_iso,
    plan_chain,
    remaining_chain_message,
)
from airflow_provider_tokentier.core.pricing import PriceTable
from airflow_provider_tokentier.core.routing import (
    TurnaroundHistory,
    WorkloadProfile,
    estimate_costs,
    format_duration,
    profile_from_requests,
)
from airflow_provider_tokentier.runtime.settings import resolve_price_table
from airflow_provider_tokentier.state.history import TurnaroundStore
from airflow_provider_tokentier.state.ledger import resolve_state_root

__all__ = [
    "DEFAULT_INPUT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "SUBMIT_ROLE",
    "TIERED_ROLE",
    "WAIT_ROLE",
    "DagStages",
    "find_batch_stages",
    "load_dag",
    "plan_dag",
    "remaining_chain_warning",
    "stage_role",
]

log = logging.getLogger(__name__)

#: Token sizes assumed per request when a request count is given (``--requests``) but no rows.
DEFAULT_INPUT_TOKENS = 1000
DEFAULT_OUTPUT_TOKENS = 300

#: Any latency budget works for pricing; the profile just needs one.
_PRICING_BUDGET_S = 86400.0


@dataclasses.dataclass
class DagStages:
    """The batch stages of one DAG, in task order, and which run before which."""

    stages: dict[str, BatchStage]
    before: dict[str, set[str]]
    stage_of_task: dict[str, str]
    notes: list[str] = dataclasses.field(default_factory=list)

    def chains(self) -> list[tuple[str, ...]]:
        """Every maximal chain of stages, each as stage keys in run order."""
        return find_chains(list(self.stages), self.before)


# -- loading -------------------------------------------------------------------------------------
def _dags_in(namespace: Mapping[str, Any]) -> list[Any]:
    from airflow.sdk import DAG

    seen: dict[str, Any] = {}
    for value in namespace.values():
        if isinstance(value, DAG):
            seen.setdefault(value.dag_id, value)
    return list(seen.values())


def load_dag(target: str, *, dag_id: str | None = None, dags_folder: str | None = None) -> Any:
    """The DAG named by ``target``: a Python file (imported directly) or a dag id.

    A dag id is looked up through Airflow's ``DagBag`` over ``dags_folder`` (default: the
    configured ``[core] dags_folder``). A file holding several DAGs needs ``dag_id``.
    ``ValueError`` when nothing matches.
    """
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ValueError(f"no such DAG file: {target}")
        name = f"_tokentier_plan_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        folder = str(path.resolve().parent)
        added = folder not in sys.path
        if added:
            sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        finally:
            if added:
                sys.path.remove(folder)
        dags = _dags_in(vars(module))
        if dag_id is not None:
            dags = [d for d in dags if d.dag_id == dag_id]
        if len(dags) != 1:
            found = ", ".join(sorted(d.dag_id for d in _dags_in(vars(module)))) or "none"
            which = f"DAG {dag_id!r}" if dag_id else "exactly one DAG"
            raise ValueError(f"{target} must define {which} (found: {found}); pick one with --dag-id")
        return dags[0]

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1 keeps DagBag in airflow.models
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,unused-ignore]

    bag = DagBag(dag_folder=dags_folder, collect_dags=True)
    dag = bag.dags.get(dag_id or target)
    if dag is None:
        errors = "; ".join(f"{f}: {e.strip().splitlines()[-1]}" for f, e in bag.import_errors.items())
        raise ValueError(
            f"no DAG {dag_id or target!r} in {bag.dag_folder} "
            f"(found: {', '.join(sorted(bag.dags)) or 'none'})"
            + (f"; import errors: {errors}" if errors else "")
        )
    return dag


# -- reading operators ---------------------------------------------------------------------------
def _references(value: Any) -> list[str]:
    """Task ids an XComArg (or a structure holding XComArgs) pulls from."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    return sorted({op.task_id for op, _ in XComArg.iter_xcom_references(value)})


def _is_dynamic(value: Any) -> bool:
    from airflow.sdk.definitions.xcom_arg import XComArg

    if isinstance(value, XComArg):
        return True
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _static_rows(task: Any) -> list[Mapping[str, Any]] | None:
    rows = getattr(task, "requests", None)
    if rows is None or _is_dynamic(rows) or isinstance(rows, (str, Mapping)):
        return None
    if isinstance(rows, Sequence) and all(isinstance(r, Mapping) for r in rows):
        return list(rows)
    return None


def _row_model(row: Mapping[str, Any]) -> str | None:
    body = row.get("params") or row.get("body") or {}
    model = body.get("model") if isinstance(body, Mapping) else None
    return str(model) if model else None


def _model_of(task: Any) -> str | None:
    model = getattr(task, "model", None)
    if isinstance(model, str) and model and not _is_dynamic(model):
        return model
    rows = _static_rows(task)
    return _row_model(rows[0]) if rows else None


def _deadline_of(task: Any) -> Deadline | None:
    value = getattr(task, "deadline", None)
    source = task.task_id
    if value is None:
        budget = getattr(task, "latency_budget_s", None)
        if budget is not None:
            return Deadline("after_submission", source, after_s=float(budget))
        return None
    if isinstance(value, datetime.timedelta):
        return Deadline("after_submission", source, after_s=value.total_seconds())
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
        return Deadline("absolute", source, at=aware.timestamp())
    if isinstance(value, str) and not _is_dynamic(value):
        return Deadline("absolute", source, at=parse_iso(value).timestamp())
    refs = _references(value) if not isinstance(value, str) else []
    note = f"computed by {', '.join(refs)} at run time" if refs else "templated, rendered at run time"
    return Deadline("unknown", source, note=note)


def _state_root(*tasks: Any) -> str | None:
    for task in tasks:
        root = getattr(task, "state_root", None) if task is not None else None
        if isinstance(root, str) and root and not _is_dynamic(root):
            return root
    return None


def _history(provider: str, model: str | None, root: str | None) -> tuple[TurnaroundHistory, str]:
    if model is None:
        history = TurnaroundHistory(provider, "unknown")
        return history, (
            f"defaults (p50 {format_duration(history.p50())}, p95 {format_duration(history.p95())}): "
            "the model is only known at run time"
        )
    history = TurnaroundStore(resolve_state_root(root)).load(provider, model)
    if history.trusted:
        return history, f"history: {history.describe()}"
    return history, (
        f"defaults (p50 {format_duration(history.p50())}, p95 {format_duration(history.p95())}): "
        f"{len(history.samples)} of the {history.min_samples} {provider}/{model} batches needed "
        "to trust history are recorded"
    )


@dataclasses.dataclass(frozen=True)
class _Sizing:
    """Request counts given by the caller (``tokentier plan --requests``)."""

    counts: Mapping[str, int]  # task id (or "*": every stage) -> requests
    input_tokens: int = DEFAULT_INPUT_TOKENS
    output_tokens: int = DEFAULT_OUTPUT_TOKENS

    def count_for(self, task_ids: Iterable[str]) -> int | None:
        for task_id in task_ids:
            if task_id in self.counts:
                return self.counts[task_id]
        return self.counts.get("*")


def _costs(
    provider: str,
    model: str | None,
    source: Any,
    task_ids: Sequence[str],
    sizing: _Sizing | None,
    prices: PriceTable | None,
) -> tuple[int | None, Mapping[str, float | None] | None, str]:
    rows = _static_rows(source) if source is not None else None
    if model is None:
        return None, None, "the model is only known at run time"
    profile: WorkloadProfile | None = None
    if rows:
        profile = profile_from_requests(
            [r if _row_model(r) else _with_model(r, provider, model) for r in rows],
            provider=provider,
            model=model,
            latency_budget_s=_PRICING_BUDGET_S,
        )
    elif sizing is not None and (count := sizing.count_for(task_ids)) is not None:
        profile = WorkloadProfile(
            provider=provider,
            model=model,
            request_count=count,
            input_tokens_per_request=sizing.input_tokens,
            output_tokens_per_request=sizing.output_tokens,
            latency_budget_s=_PRICING_BUDGET_S,
        )
    if profile is None:
        return None, None, _unknown_count_note(source)
    return profile.request_count, estimate_costs(profile, prices), ""


def _with_model(row: Mapping[str, Any], provider: str, model: str) -> dict[str, Any]:
    key = "params" if provider == "anthropic" else "body"
    return {**row, key: {**(row.get(key) or {}), "model": model}}


def _unknown_count_note(task: Any) -> str:
    if task is None:
        return "batches submitted elsewhere (batch_ids)"
    for attr in ("requests", "requests_uri"):
        value = getattr(task, attr, None)
        if value is None:
            continue
        refs = [] if isinstance(value, str) else _references(value)
        if refs:
            return f"requests come from {', '.join(refs)} at run time (pass --requests)"
        if attr == "requests_uri":
            return "requests are read from a file at run time (pass --requests)"
    return "request count not knowable before the run (pass --requests)"


def _stage(
    key: str,
    *,
    provider: str,
    model: str | None,
    tasks: Sequence[str],
    wait: Any,
    source: Any,
    history_root: str | None,
    sizing: _Sizing | None,
    prices: PriceTable | None,
    with_costs: bool,
) -> BatchStage:
    history, where = _history(provider, model, history_root or _state_root(source, wait))
    requests, costs, note = (
        _costs(provider, model, source, tasks, sizing, prices)
        if with_costs
        else (None, None, "not estimated")
    )
    return BatchStage(
        key=key,
        provider=provider,
        model=model,
        p50_s=min(history.p50(), history.p95()),
        p95_s=history.p95(),
        turnaround_source=where,
        tasks=tuple(tasks),
        deadline=_deadline_of(wait) if wait is not None else None,
        rescue_tier=getattr(wait, "rescue_tier", None) if wait is not None else None,
        requests=requests,
        costs=costs,
        cost_note=note,
    )


#: ``batch_stage_role`` of `BatchSubmitOperator`: it submits a batch workload.
SUBMIT_ROLE = "submit"
#: ``batch_stage_role`` of `BatchSensor`: it waits on a submitted batch workload.
WAIT_ROLE = "wait"
#: ``batch_stage_role`` of `TieredInferenceOperator`: a batch stage when it is batch-bound.
TIERED_ROLE = "tiered"


def stage_role(task: Any) -> str | None:
    """The part ``task`` plays in a batch stage, from the ``batch_stage_role`` its class carries.

    Operators declare their role instead of being recognised by class, so this module never
    imports the operators and sensors that call it back at run time.
    """
    role = getattr(type(task), "batch_stage_role", None)
    return role if isinstance(role, str) else None


def find_batch_stages(
    dag: Any,
    *,
    history_root: str | None = None,
    request_counts: Mapping[str, int] | None = None,
    input_tokens: int = DEFAULT_INPUT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    prices: PriceTable | None = None,
    with_costs: bool = True,
) -> DagStages:
    """Walk ``dag``'s tasks and return its batch stages and their order.

    ``history_root`` overrides where turnaround history is read (default: each stage's
    ``state_root``, else the configured one). ``request_counts`` maps a stage's task id (or
    ``"*"`` for every stage) to a request count, for stages whose rows only exist at run time;
    they are then priced at ``input_tokens``/``output_tokens`` per request.
    """
    if prices is None and with_costs:
        prices = resolve_price_table(None)
    sizing = _Sizing(dict(request_counts or {}), input_tokens, output_tokens) if request_counts else None
    tasks = list(dag.tasks)
    submits = {t.task_id: t for t in tasks if stage_role(t) == SUBMIT_ROLE}
    waited: set[str] = set()
    built: list[tuple[BatchStage, str, str]] = []  # (stage, entry task, exit task)
    notes: list[str] = []
    options: dict[str, Any] = {
        "history_root": history_root,
        "sizing": sizing,
        "prices": prices,
        "with_costs": with_costs,
    }

    for task in tasks:
        if stage_role(task) == WAIT_ROLE:
            refs = [] if task.submission is None else _references(task.submission)
            submit = next((submits[r] for r in refs if r in submits), None)
            if submit is not None:
                waited.add(submit.task_id)
                stage = _stage(
                    f"{submit.task_id} -> {task.task_id}",
                    provider=submit.provider,
                    model=_model_of(submit),
                    tasks=(submit.task_id, task.task_id),
                    wait=task,
                    source=submit,
                    **options,
                )
                built.append((stage, submit.task_id, task.task_id))
            elif task.provider is not None:
                stage = _stage(
                    task.task_id,
                    provider=task.provider,
                    model=None,
                    tasks=(task.task_id,),
                    wait=task,
                    source=None,
                    **options,
                )
                built.append((stage, task.task_id, task.task_id))
            else:
                notes.append(f"{task.task_id}: a BatchSensor whose submission is not a BatchSubmitOperator's")
        elif stage_role(task) == TIERED_ROLE:
            if task.tier == "batch" or task.chained_batch_stages > 1:
                stage = _stage(
                    task.task_id,
                    provider=task.provider,
                    model=_model_of(task),
                    tasks=(task.task_id,),
                    wait=task,
                    source=task,
                    **options,
                )
                built.append((stage, task.task_id, task.task_id))
            else:
                forced = f"forced to {task.tier}" if task.tier else "routed at run time"
                notes.append(
                    f"{task.task_id}: TieredInferenceOperator {forced}; not counted as a batch stage"
                )
    for task_id, submit in submits.items():
        if task_id not in waited:
            stage = _stage(
                task_id,
                provider=submit.provider,
                model=_model_of(submit),
                tasks=(task_id,),
                wait=None,
                source=submit,
                **options,
            )
            built.append((stage, task_id, task_id))
            notes.append(f"{task_id}: no BatchSensor waits on this submission inside the DAG")

    order = {t.task_id: i for i, t in enumerate(tasks)}
    built.sort(key=lambda item: order[item[1]])
    upstream = {entry: dag.get_task(entry).get_flat_relative_ids(upstream=True) for _, entry, _ in built}
    before = {
        stage.key: {other.key for other, _, other_exit in built if other_exit in upstream[entry]}
        for stage, entry, _ in built
    }
    stage_of_task = {task_id: stage.key for stage, _, _ in built for task_id in stage.tasks}
    return DagStages({s.key: s for s, _, _ in built}, before, stage_of_task, notes)


def plan_dag(
    dag: Any,
    *,
    chain_start: float | None = None,
    deadline: Deadline | None = None,
    **options: Any,
) -> tuple[ChainPlan, list[tuple[str, ...]], DagStages]:
    """The plan of ``dag``'s longest batch chain, every chain, and the stages found.

    ``options`` go to :func:`find_batch_stages`; ``deadline`` overrides the last stage's deadline
    when that one is not static.
    """
    found = find_batch_stages(dag, **options)
    chains = found.chains()
    longest = longest_chain(chains, found.stages) or ()
    plan = plan_chain([found.stages[k] for k in longest], chain_start=chain_start, deadline=deadline)
    return plan, chains, found


def remaining_chain_warning(task: Any, deadline_at: float | None, now: float) -> str | None:
    """A warning when ``task``'s remaining batch chain cannot finish by ``deadline_at`` at p95.

    ``task`` is a `BatchSensor` (or a batch-bound `TieredInferenceOperator`) in its DAG; the
    remaining chain is its own stage plus the longest run of batch stages downstream of it.
    ``deadline_at`` and ``now`` are unix seconds. ``None`` when it fits, when there is no
    deadline, or when the DAG cannot be read (a warning must never fail the task).
    """
    if deadline_at is None:
        return None
    try:
        if not task.has_dag():
            return None
        found = find_batch_stages(task.dag, with_costs=False)
        key = found.stage_of_task.get(task.task_id)
        if key is None:
            return None
        tails = [chain[chain.index(key) :] for chain in found.chains() if key in chain]
        tail = max(tails, key=lambda c: (sum(found.stages[k].p95_s for k in c), len(c)), default=(key,))
        return remaining_chain_message([found.stages[k] for k in tail], deadline_at, now)
    except Exception:  # a planning hint must never break the wait it comments on
        log.warning(
            "Could not plan the remaining batch chain of %s", getattr(task, "task_id", task), exc_info=True
        )
        return None
