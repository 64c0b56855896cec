"""Chain planning: chains of batch stages, cumulative p50/p95, deadline fit, and `tokentier plan`."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pendulum
import pytest

from airflow_provider_tokentier.cli import main
from airflow_provider_tokentier.core.chain_plan import (
    BatchStage,
    Deadline,
    find_chains,
    longest_chain,
    plan_chain,
    remaining_chain_message,
    render_plan,
)

ROOT = Path(__file__).resolve().parents[2]
H = 3600.0
START = datetime.datetime(2026, 11, 27, 1, tzinfo=datetime.timezone.utc).timestamp()


def stage(key: str, p50: float = 1 * H, p95: float = 6 * H, **kwargs) -> BatchStage:
    return BatchStage(key=key, provider="anthropic", model="claude-haiku-5-5", p50_s=p50, p95_s=p95, **kwargs)


# -- chains ------------------------------------------------------------------------------------
def test_a_linear_dag_is_one_chain_in_run_order():
    assert find_chains(["a", "b", "c"], {"b": {"a"}, "c": {"b"}}) == [("a", "b", "c")]


def test_transitive_before_relations_are_reduced():
    # c lists both a and b as upstream (as a flat upstream walk does): still one chain a -> b -> c.
    assert find_chains(["a", "b", "c"], {"b": {"a"}, "c": {"a", "b"}}) == [("a", "b", "c")]


def test_independent_stages_are_chains_of_one():
    assert find_chains(["a", "b"], {}) == [("a",), ("b",)]


def test_a_fan_out_gives_one_chain_per_branch():
    chains = find_chains(
        ["gen", "judge", "embed", "index"], {"judge": {"gen"}, "embed": {"gen"}, "index": {"embed"}}
    )
    assert chains == [("gen", "judge"), ("gen", "embed", "index")]


def test_cycles_and_unknown_stages_are_refused():
    with pytest.raises(ValueError, match="cycle"):
        find_chains(["a", "b"], {"a": {"b"}, "b": {"a"}})
    with pytest.raises(ValueError, match="unknown stage"):
        find_chains(["a"], {"a": {"zzz"}})


def test_longest_chain_is_by_cumulative_p95_then_length():
    stages = {
        "a": stage("a"),
        "b": stage("b", p95=1 * H),
        "c": stage("c", p95=1 * H),
        "d": stage("d", p95=12 * H),
    }
    assert longest_chain([("a", "b", "c"), ("d",)], stages) == ("d",)
    assert longest_chain([("b",), ("b", "c")], stages) == ("b", "c")
    assert longest_chain([], stages) is None


# -- cumulative finish and deadlines -----------------------------------------------------------
def test_chained_stages_serialize_their_latency():
    plan = plan_chain([stage("gen", 1 * H, 6 * H), stage("judge", 2 * H, 5 * H)], chain_start=START)
    first, second = plan.stages
    assert (first.finish_p50_s, first.finish_p95_s) == (1 * H, 6 * H)
    assert (second.start_p50_s, second.start_p95_s) == (1 * H, 6 * H)
    assert (second.finish_p50_s, second.finish_p95_s) == (3 * H, 11 * H)
    assert (plan.total_p50_s, plan.total_p95_s) == (3 * H, 11 * H)
    assert plan.fits_p95 is None
    assert plan.verdict().startswith("unknown")


def test_an_absolute_deadline_that_the_p95_meets_fits():
    due = Deadline("absolute", "judge_ready", at=START + 13 * H)
    plan = plan_chain([stage("gen"), stage("judge", deadline=due)], chain_start=START)
    assert plan.fits_p50 is True
    assert plan.fits_p95 is True
    assert plan.verdict().startswith("yes")


def test_a_deadline_met_only_at_p50_relies_on_the_rescue():
    due = Deadline("absolute", "judge_ready", at=START + 8 * H)
    plan = plan_chain([stage("gen"), stage("judge", deadline=due, rescue_tier="flex")], chain_start=START)
    assert plan.fits_p50 is True
    assert plan.fits_p95 is False
    verdict = plan.verdict()
    assert verdict.startswith("at p50 only")
    assert "4h past" in verdict
    assert "judge -> flex" in verdict


def test_a_deadline_missed_even_at_p50_does_not_fit():
    due = Deadline("absolute", "judge_ready", at=START + 90 * 60)
    plan = plan_chain([stage("gen"), stage("judge", deadline=due)], chain_start=START)
    assert plan.fits_p50 is False
    assert plan.fits_p95 is False
    assert plan.verdict().startswith("no:")
    assert "no rescue tier" in plan.verdict()


def test_an_early_stage_deadline_counts_too():
    # The last stage has room, but the first stage's own deadline is missed at p95.
    plan = plan_chain(
        [
            stage("gen", deadline=Deadline("absolute", "gen_ready", at=START + 3 * H)),
            stage("judge", deadline=Deadline("absolute", "judge_ready", at=START + 20 * H)),
        ],
        chain_start=START,
    )
    assert [s.fits_p95 for s in plan.stages] == [False, True]
    assert plan.fits_p95 is False
    assert plan.fits_p50 is True


def test_a_deadline_after_submission_is_counted_from_the_stage_start():
    after = Deadline("after_submission", "judge_ready", after_s=7 * H)
    plan = plan_chain([stage("gen"), stage("judge", deadline=after)])  # no chain start needed
    judge = plan.stages[1]
    assert judge.limit_p95_s == 6 * H + 7 * H
    assert judge.fits_p95 is True
    tight = plan_chain(
        [stage("gen"), stage("judge", deadline=Deadline("after_submission", "j", after_s=2 * H))]
    )
    assert tight.fits_p50 is True
    assert tight.fits_p95 is False


def test_an_absolute_deadline_needs_a_chain_start():
    plan = plan_chain([stage("gen", deadline=Deadline("absolute", "g", at=START + H))])
    assert plan.fits_p95 is None


def test_an_override_replaces_only_an_unknown_last_deadline():
    unknown = Deadline("unknown", "judge_ready", note="computed by morning_deadlines at run time")
    override = Deadline("absolute", "--deadline", at=START + 8 * H)
    plan = plan_chain([stage("gen"), stage("judge", deadline=unknown)], chain_start=START, deadline=override)
    assert plan.stages[1].stage.deadline == override
    assert plan.fits_p95 is False
    static = Deadline("absolute", "judge_ready", at=START + 20 * H)
    kept = plan_chain([stage("gen"), stage("judge", deadline=static)], chain_start=START, deadline=override)
    assert kept.stages[1].stage.deadline == static
    assert kept.fits_p95 is True


def test_costs_sum_per_tier_when_every_stage_is_known():
    a = stage("gen", costs={"standard": 2.0, "flex": None, "batch": 1.0}, requests=100)
    b = stage("judge", costs={"standard": 4.0, "flex": 2.0, "batch": 2.0}, requests=100)
    assert plan_chain([a, b]).total_costs() == {"standard": 6.0, "flex": None, "batch": 3.0}
    unknown = stage("judge", cost_note="requests come from build at run time")
    assert plan_chain([a, unknown]).total_costs() is None


def test_render_names_stages_cumulative_finish_deadline_and_costs():
    unknown = Deadline("unknown", "judge_ready", note="computed by morning_deadlines at run time")
    plan = plan_chain(
        [
            stage(
                "submit_gen -> gen_ready", costs={"standard": 2.0, "flex": None, "batch": 1.0}, requests=10
            ),
            stage(
                "submit_judge -> judge_ready", deadline=unknown, rescue_tier="flex", cost_note="from build"
            ),
        ],
        chain_start=START,
    )
    text = render_plan(
        plan, title="overnight", chains=[("submit_gen -> gen_ready", "submit_judge -> judge_ready")]
    )
    assert "longest: 2 chained stages" in text
    assert "+2h (11-27 03:00)" in text
    assert "+12h (11-27 13:00)" in text
    assert "unknown/templated on judge_ready (computed by morning_deadlines at run time)" in text
    assert "fits       unknown" in text
    assert "submit_gen -> gen_ready (10 req)" in text
    assert "$2.00" in text
    assert "unknown: from build" in text
    assert "rescue     submit_judge -> judge_ready -> flex" in text


def test_render_without_stages_says_so():
    text = render_plan(
        plan_chain([]), title="empty", notes=["infer: TieredInferenceOperator routed at run time"]
    )
    assert "no batch stages found" in text
    assert "routed at run time" in text


# -- the remaining chain at the start of a wait ------------------------------------------------
def test_remaining_chain_message_warns_only_when_p95_misses():
    stages = [stage("gen_ready", rescue_tier="standard"), stage("judge_ready")]
    now = START
    assert remaining_chain_message(stages, None, now) is None
    assert remaining_chain_message(stages, now + 12 * H, now) is None
    message = remaining_chain_message(stages, now + 8 * H, now)
    assert message is not None
    assert "12h at p95" in message
    assert "only 8h remain" in message
    assert "1 downstream batch stage (judge_ready)" in message
    assert "rescue tier (standard)" in message
    past = remaining_chain_message(stages[:1], now - 60, now)
    assert past is not None
    assert "already passed" in past
    assert "this batch stage" in past


# -- the Airflow glue --------------------------------------------------------------------------
def _two_stage_dag(dag_id: str, *, deadline=None, state_root: str | None = None, rows=None):
    from airflow.sdk import DAG, task

    from airflow_provider_tokentier.operators import BatchSubmitOperator, TieredInferenceOperator
    from airflow_provider_tokentier.sensors import BatchSensor

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        gen = BatchSubmitOperator(
            task_id="submit_gen", provider="anthropic", requests=rows or [], model="claude-haiku-5-5",
            state_root=state_root,
        )  # fmt: skip
        gen_ready = BatchSensor(
            task_id="gen_ready", submission=gen.output, deadline=deadline, rescue_tier="standard"
        )

        @task
        def build(manifest: dict) -> str:
            return "file:///dev/null"

        judge = BatchSubmitOperator(
            task_id="submit_judge",
            provider="openai",
            requests_uri=build(gen_ready.output),  # type: ignore[arg-type]  # an XComArg, rendered at run time
            model="gpt-6-luna",
        )
        BatchSensor(task_id="judge_ready", submission=judge.output, deadline=datetime.timedelta(hours=20))
        TieredInferenceOperator(task_id="side", provider="openai", requests=[], latency_budget="20m")
    return dag


def test_find_batch_stages_pairs_submits_with_sensors_and_orders_them(tmp_path):
    from airflow_provider_tokentier.runtime.dag_stages import find_batch_stages

    rows = [
        {"custom_id": f"r{i}", "params": {"max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}}
        for i in range(40)
    ]
    dag = _two_stage_dag("plan_glue", rows=rows, state_root=str(tmp_path))
    found = find_batch_stages(dag, history_root=str(tmp_path))
    assert list(found.stages) == ["submit_gen -> gen_ready", "submit_judge -> judge_ready"]
    assert found.chains() == [("submit_gen -> gen_ready", "submit_judge -> judge_ready")]
    gen, judge = found.stages.values()
    assert (gen.provider, gen.model, judge.provider, judge.model) == (
        "anthropic",
        "claude-haiku-5-5",
        "openai",
        "gpt-6-luna",
    )
    assert gen.requests == 40
    assert gen.costs is not None
    assert gen.costs["flex"] is None
    assert gen.costs["batch"] == pytest.approx(gen.costs["standard"] / 2)
    assert judge.costs is None
    assert "build" in judge.cost_note
    assert judge.deadline == Deadline("after_submission", "judge_ready", after_s=20 * H)
    assert gen.rescue_tier == "standard"
    assert found.stage_of_task["judge_ready"] == "submit_judge -> judge_ready"
    assert any("side" in note and "routed at run time" in note for note in found.notes)


def test_history_replaces_the_defaults_once_trusted(tmp_path):
    from airflow_provider_tokentier.runtime.dag_stages import find_batch_stages
    from airflow_provider_tokentier.state.history import TurnaroundStore
    from airflow_provider_tokentier.state.ledger import resolve_state_root

    store = TurnaroundStore(resolve_state_root(str(tmp_path)))
    for minutes in range(20, 40):
        store.record("anthropic", "claude-haiku-5-5", minutes * 60.0)
    found = find_batch_stages(_two_stage_dag("plan_history"), history_root=str(tmp_path), with_costs=False)
    gen = found.stages["submit_gen -> gen_ready"]
    assert (gen.p50_s, gen.p95_s) == (29 * 60.0, 38 * 60.0)
    assert gen.turnaround_source.startswith("history: p95 of 20 recorded")
    judge = found.stages["submit_judge -> judge_ready"]
    assert (judge.p50_s, judge.p95_s) == (H, 6 * H)
    assert judge.turnaround_source.startswith("defaults")


def test_remaining_chain_warning_for_a_sensor_at_start(tmp_path, monkeypatch):
    from airflow_provider_tokentier.runtime.dag_stages import remaining_chain_warning

    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT", str(tmp_path))
    dag = _two_stage_dag("plan_warning")
    gen_ready, judge_ready = dag.get_task("gen_ready"), dag.get_task("judge_ready")
    now = START
    warning = remaining_chain_warning(gen_ready, now + 8 * H, now)
    assert warning is not None
    assert "12h at p95" in warning
    assert "submit_judge -> judge_ready" in warning
    assert remaining_chain_warning(gen_ready, now + 13 * H, now) is None
    assert remaining_chain_warning(gen_ready, None, now) is None
    # The last stage only has itself left.
    assert remaining_chain_warning(judge_ready, now + 8 * H, now) is None
    assert "this batch stage" in (remaining_chain_warning(judge_ready, now + 2 * H, now) or "")
    # A task outside any batch stage gets nothing, and nothing raises.
    assert remaining_chain_warning(dag.get_task("build"), now + H, now) is None
    assert remaining_chain_warning(object(), now + H, now) is None


# -- the CLI -----------------------------------------------------------------------------------
def test_tokentier_plan_shows_the_overnight_eval_chain(tmp_path):
    out = io.StringIO()
    argv = ["plan", str(ROOT / "dags_examples" / "overnight_eval.py"), "--start", "2026-11-27T00:30:00Z"]
    code = main([*argv, "--history-root", str(tmp_path)], out=out)
    text = out.getvalue()
    assert code == 0, text
    assert text.startswith("tokentier plan: overnight_eval (")
    assert "longest: 2 chained stages" in text
    assert text.index("1  submit_generate -> generate_ready") < text.index("2  submit_judge -> judge_ready")
    assert "anthropic/claude-haiku-5-5" in text
    assert "openai/gpt-6-luna" in text
    # Cumulative finish: 1h + 1h at p50, 6h + 6h at p95 (the router's defaults: no history yet).
    assert "+2h (11-27 02:30)" in text
    assert "+12h (11-27 12:30)" in text
    assert (
        "unknown/templated on generate_ready, judge_ready (computed by morning_deadlines at run time)" in text
    )
    assert "fits       unknown" in text
    assert "requests come from export_eval_cases at run time" in text
    assert (
        "rescue     submit_generate -> generate_ready -> standard, submit_judge -> judge_ready -> flex"
        in text
    )

    out = io.StringIO()
    code = main([*argv, "--history-root", str(tmp_path), "--deadline", "8h", "--requests", "500"], out=out)
    text = out.getvalue()
    assert code == 0
    assert "fits       at p50 only" in text
    assert "4h past a deadline" in text
    assert "submit_generate -> generate_ready (500 req)" in text
    assert "chain" in text
    assert "unknown until" not in text


def test_tokentier_plan_by_dag_id_and_errors(tmp_path, capsys):
    out = io.StringIO()
    folder = str(ROOT / "dags_examples")
    assert (
        main(["plan", "overnight_eval", "--dags-folder", folder, "--history-root", str(tmp_path)], out=out)
        == 0
    )
    assert "longest: 2 chained stages" in out.getvalue()
    assert main(["plan", "no_such_dag", "--dags-folder", folder], out=io.StringIO()) == 2
    assert "no DAG 'no_such_dag'" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "missing.py")], out=io.StringIO()) == 2
    assert main(["plan", str(ROOT / "dags_examples" / "overnight_eval.py"), "--requests", "x=y"]) == 2
