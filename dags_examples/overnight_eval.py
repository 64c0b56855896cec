"""Overnight eval: generate answers on Anthropic's batch tier, judge them on OpenAI's, by 09:00.

Two explicit, chained batch stages -- explicit rather than one tiered task, so the serialized latency is
visible in the graph::

    export_eval_cases -> submit_generate -> generate_ready -> build_judge_requests
        -> submit_judge -> judge_ready -> report

The eval suite runs after midnight and the team reads the scores at the 09:00 stand-up: nothing
wall-clock-sensitive consumes the answers before then, so both stages run at the 0.5x batch rate.
But chaining two batches serializes their latency -- two one-hour batches take two hours at
least, with a long tail (``tokentier plan dags_examples/overnight_eval.py --deadline 8h`` shows
the chain at p50 and p95). So each sensor gets a deadline and a rescue tier for the tail:

* the generate stage must land ``TOKENTIER_EVAL_JUDGE_RESERVE`` (3 h) before 09:00, leaving the
  judge its window; what is still running then moves to Anthropic's standard tier (Anthropic has
  no flex);
* the judge stage must land by 09:00 UTC; its tail moves to OpenAI flex (batch price, minutes of
  latency; requests flex cannot serve fall back to standard).

The deadline is 09:00 UTC on the day the data interval ends (computed per run by
``morning_deadlines``; the sensors' ``deadline`` is templated). A run that starts after its
09:00 has passed (a backfill, a manual re-run) gets ``TOKENTIER_EVAL_LATE_BUDGET`` from its start
instead of a deadline that is already over.

Settings come from the environment so the same file runs in the demo and in production:
``TOKENTIER_EVAL_CASES`` (default 500), ``TOKENTIER_GENERATE_MODEL`` (Anthropic, default
claude-haiku-5-5), ``TOKENTIER_JUDGE_MODEL`` (OpenAI, default gpt-6-luna),
``TOKENTIER_EVAL_DEADLINE_HOUR`` (UTC, default 9), ``TOKENTIER_EVAL_JUDGE_RESERVE`` (default 3h),
``TOKENTIER_EVAL_LATE_BUDGET`` (default 8h), ``TOKENTIER_POLL_INTERVAL`` (seconds, default 60).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_tokentier.core.routing import parse_duration
from airflow_provider_tokentier.operators import BatchSubmitOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.sensors import BatchSensor
from airflow_provider_tokentier.state.ledger import resolve_state_root

CASES = int(os.environ.get("TOKENTIER_EVAL_CASES", "500"))
GENERATE_MODEL = os.environ.get("TOKENTIER_GENERATE_MODEL", "claude-haiku-5-5")
JUDGE_MODEL = os.environ.get("TOKENTIER_JUDGE_MODEL", "gpt-6-luna")
DEADLINE_HOUR = int(os.environ.get("TOKENTIER_EVAL_DEADLINE_HOUR", "9"))
JUDGE_RESERVE_S = parse_duration(os.environ.get("TOKENTIER_EVAL_JUDGE_RESERVE", "3h"))
LATE_BUDGET_S = parse_duration(os.environ.get("TOKENTIER_EVAL_LATE_BUDGET", "8h"))
POLL_INTERVAL = float(os.environ.get("TOKENTIER_POLL_INTERVAL", "60"))

_SKILLS = ("SQL window functions", "incident write-ups", "unit conversion", "regex", "API pagination")
_SCORE = re.compile(r"\b(10|[1-9])\s*(?:/\s*10)?\b")


def _question(i: int) -> str:
    """Stand-in for a case of the eval suite (a fixed, versioned set in real life)."""
    skill = _SKILLS[i % len(_SKILLS)]
    return f"Case {i} ({skill}): explain the approach step by step, then give the final answer."


def _case_index(custom_id: str) -> int:
    return int(custom_id.rsplit("-", 1)[-1])


def _inputs_dir(context: dict[str, Any]) -> Any:
    run_id = str(context["run_id"]).replace(":", "_").replace("+", "_")
    path = resolve_state_root(None) / "inputs" / "overnight_eval" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text(row: dict[str, Any]) -> str:
    """The reply text of a result row, Anthropic or OpenAI chat."""
    response = row.get("response") or {}
    if "content" in response:
        return "".join(b.get("text", "") for b in response["content"] if isinstance(b, dict))
    choices = response.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


with DAG(
    dag_id="overnight_eval",
    schedule="30 0 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier", "batch", "eval", "chained"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def morning_deadlines(**context: Any) -> dict[str, str]:
        """09:00 UTC after the data interval (judge) and the generate stage's share of it."""
        now = datetime.datetime.now(datetime.timezone.utc)
        end = context.get("data_interval_end") or context.get("logical_date") or now
        end = datetime.datetime.fromtimestamp(end.timestamp(), datetime.timezone.utc)
        due = end.replace(hour=DEADLINE_HOUR, minute=0, second=0, microsecond=0)
        if due <= end:
            due += datetime.timedelta(days=1)
        if due <= now:
            print(
                f"The {due:%Y-%m-%d %H:%M} UTC deadline has passed (a late run): "
                f"allowing {LATE_BUDGET_S:.0f}s from now"
            )
            due = now + datetime.timedelta(seconds=LATE_BUDGET_S)
        # The generate stage leaves the judge its reserve, but never less than half the time left.
        generate = max(due - datetime.timedelta(seconds=JUDGE_RESERVE_S), now + (due - now) / 2)
        return {"generate": generate.isoformat(), "judge": due.isoformat()}

    @task
    def export_eval_cases(**context: Any) -> str:
        """One answer-generation request per eval case, as a JSONL file; returns its URI."""
        path = _inputs_dir(context) / "generate_requests.jsonl"
        with path.open("w") as out:
            for i in range(CASES):
                row = {
                    "custom_id": f"case-{i:05d}",
                    "params": {
                        "max_tokens": 400,
                        "messages": [{"role": "user", "content": _question(i)}],
                    },
                }
                out.write(json.dumps(row) + "\n")
        return str(path)

    deadlines = morning_deadlines()

    submit_generate = BatchSubmitOperator(
        task_id="submit_generate",
        provider="anthropic",
        requests_uri=export_eval_cases(),
        model=GENERATE_MODEL,
    )
    generate_ready = BatchSensor(
        task_id="generate_ready",
        submission=submit_generate.output,
        deadline=deadlines["generate"],
        rescue_tier="standard",
        rebatch="expired",
        fail_on_partial=False,  # judge what was answered; the report counts the rest
        poll_interval=POLL_INTERVAL,
    )

    @task
    def build_judge_requests(generated: dict[str, Any], **context: Any) -> str:
        """One judge request per answered case, from the generate stage's result rows."""
        path = _inputs_dir(context) / "judge_requests.jsonl"
        written = 0
        with path.open("w") as out:
            for row in read_results(generated):
                if row["status"] != "succeeded":
                    continue
                question = _question(_case_index(row["custom_id"]))
                body = {
                    "max_completion_tokens": 64,
                    "messages": [
                        {
                            "role": "system",
                            "content": "You grade answers. Reply with a score from 1 to 10, "
                            "then one sentence of justification.",
                        },
                        {"role": "user", "content": f"Question: {question}\n\nAnswer: {_text(row)}"},
                    ],
                }
                out.write(json.dumps({"custom_id": f"judge-{row['custom_id']}", "body": body}) + "\n")
                written += 1
        if not written:
            raise ValueError(f"no answered case to judge: {generated['counts']}")
        print(f"{written} judge requests from {generated['total']} cases ({generated['counts']})")
        return str(path)

    submit_judge = BatchSubmitOperator(
        task_id="submit_judge",
        provider="openai",
        endpoint="/v1/chat/completions",
        requests_uri=build_judge_requests(generate_ready.output),
        model=JUDGE_MODEL,
    )
    judge_ready = BatchSensor(
        task_id="judge_ready",
        submission=submit_judge.output,
        deadline=deadlines["judge"],
        rescue_tier="flex",
        rebatch="expired",
        fail_on_partial=False,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def report(generated: dict[str, Any], judged: dict[str, Any]) -> dict[str, Any]:
        """Scores and what both stages cost, for the morning stand-up."""
        scores: list[int] = []
        unparsed = 0
        for row in read_results(judged):
            if row["status"] != "succeeded":
                continue
            match = _SCORE.search(_text(row))
            if match:
                scores.append(int(match.group(1)))
            else:
                unparsed += 1
        cost = generated["cost_usd"] + judged["cost_usd"]
        standard = generated["standard_cost_usd"] + judged["standard_cost_usd"]
        summary = {
            "cases": generated["total"],
            "answered": generated["counts"]["succeeded"],
            "judged": judged["counts"]["succeeded"],
            "scored": len(scores),
            "unparsed_scores": unparsed,
            "mean_score": round(sum(scores) / len(scores), 2) if scores else None,
            "stages": {
                "generate": {
                    k: generated[k] for k in ("counts", "tiers", "rounds", "cost_usd", "results_uri")
                },
                "judge": {k: judged[k] for k in ("counts", "tiers", "rounds", "cost_usd", "results_uri")},
            },
            "deadline": judged["deadline"],
            "cost_usd": round(cost, 9),
            "standard_cost_usd": round(standard, 9),
            "savings_usd": round(standard - cost, 9),
        }
        print(json.dumps(summary, indent=2))
        return summary

    report(generate_ready.output, judge_ready.output)
