"""Reads for evals: progress, summaries, comparisons with a baseline, history for the chart."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce

from evals.models import Grade, JudgeCalibration, Result, Run, Suite
from usage.models import ModelCall, Purpose

DONE = (Result.Status.PASSED, Result.Status.FAILED, Result.Status.ERRORED, Result.Status.CANCELLED)


def judge_min_agreement() -> float:
    return float(getattr(settings, "JUDGE_MIN_AGREEMENT", 0.8))


def judge_calibration(judge_model: str, grader: str) -> JudgeCalibration | None:
    """The latest measured agreement of `judge_model` with people on `grader`'s task."""
    if not judge_model:
        return None
    return JudgeCalibration.objects.filter(judge_model=judge_model, grader=grader).first()


def judge_trusted(judge_model: str, grader: str) -> bool:
    """A judge counts toward pass/fail only once it has been measured to agree with people."""
    calibration = judge_calibration(judge_model, grader)
    return calibration is not None and calibration.agreement >= judge_min_agreement()


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    counts: dict[str, int]

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def run_progress(run: Run) -> Progress:
    rows = Result.objects.filter(run=run).values("status").annotate(n=Count("pk"))
    counts = dict.fromkeys(Result.Status.values, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return Progress(total=sum(counts.values()), done=sum(counts[s] for s in DONE), counts=counts)


def _rate(passed: int, total: int) -> float | None:
    return round(passed / total, 4) if total else None


def grader_rates(run: Run) -> dict[str, dict[str, Any]]:
    """Per grader: how many results it graded, how many passed, the pass rate, and trust."""
    rows = (
        Grade.objects.filter(result__run=run)
        .values("grader", "kind", "judge_model")
        .annotate(total=Count("pk"), passed=Count("pk", filter=Q(passed=True)))
        .order_by("grader")
    )
    rates: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry: dict[str, Any] = {
            "kind": row["kind"],
            "total": row["total"],
            "passed": row["passed"],
            "pass_rate": _rate(row["passed"], row["total"]),
        }
        if row["kind"] == Grade.Kind.MODEL:
            calibration = judge_calibration(row["judge_model"], row["grader"])
            entry["judge_model"] = row["judge_model"]
            entry["agreement"] = None if calibration is None else round(calibration.agreement, 4)
            entry["agreement_n"] = None if calibration is None else calibration.n
            entry["trusted"] = judge_trusted(row["judge_model"], row["grader"])
        rates[row["grader"]] = entry
    return rates


def rates_by_answer_source(run: Run) -> dict[str, dict[str, Any]]:
    """Pass rates split by whose text was shown as the answer (the model, evidence, none)."""
    rows = (
        Result.objects.filter(
            run=run, answer__isnull=False, status__in=[Result.Status.PASSED, Result.Status.FAILED]
        )
        .values("answer__answer_source")
        .annotate(total=Count("pk"), passing=Count("pk", filter=Q(status=Result.Status.PASSED)))
        .order_by("answer__answer_source")
    )
    return {
        row["answer__answer_source"]: {
            "total": row["total"],
            "passed": row["passing"],
            "pass_rate": _rate(row["passing"], row["total"]),
        }
        for row in rows
    }


def run_cost(run: Run) -> dict[str, Any]:
    """Cost of the run (unknown costs count as nothing): its answers' and its judge's calls.

    `prompt_tokens` and `completion_tokens` are the answers'; the judge's calls (attached to the
    answers they graded, purpose "judge") are totalled apart.
    """
    totals = Result.objects.filter(run=run, answer__isnull=False).aggregate(
        cost=Coalesce(Sum("answer__cost_usd"), Value(Decimal(0)), output_field=DecimalField()),
        priced=Count("pk", filter=Q(answer__cost_usd__isnull=False)),
        prompt_tokens=Coalesce(Sum("answer__prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("answer__completion_tokens"), 0),
    )
    judge = ModelCall.objects.filter(answer__eval_results__run=run, purpose=Purpose.JUDGE).aggregate(
        cost=Coalesce(Sum("cost"), Value(Decimal(0)), output_field=DecimalField()),
        calls=Count("pk"),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
    )
    return {
        "cost_usd": float(totals["cost"] + judge["cost"]),
        "answers_cost_usd": float(totals["cost"]),
        "answers_priced": totals["priced"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": totals["completion_tokens"],
        "judge_cost_usd": float(judge["cost"]),
        "judge_calls": judge["calls"],
        "judge_prompt_tokens": judge["prompt_tokens"],
        "judge_completion_tokens": judge["completion_tokens"],
    }


def run_duration(run: Run) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at
    if end is None:
        from django.utils import timezone

        end = timezone.now()
    return round((end - run.started_at).total_seconds(), 1)


def overall_pass_rate(counts: dict[str, int]) -> float | None:
    """Passed over everything that finished, errored included: an error is not a pass."""
    finished = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("errored", 0)
    return _rate(counts.get("passed", 0), finished)


def run_baseline(run: Run) -> Run | None:
    """The run it is compared with: the chosen baseline, or the suite's previous completed run."""
    if run.baseline_id is not None:
        return run.baseline
    return (
        Run.objects.filter(suite_id=run.suite_id, status=Run.Status.COMPLETED, created_at__lt=run.created_at)
        .exclude(pk=run.pk)
        .order_by("-created_at", "-pk")
        .first()
    )


@dataclass(frozen=True)
class Change:
    case_id: int
    question: str
    before: str
    after: str
    result_id: int
    failing: list[str]


@dataclass(frozen=True)
class Comparison:
    baseline: Run | None
    graders: dict[str, dict[str, Any]]  # name -> {pass_rate, baseline_pass_rate, delta}
    overall: float | None
    baseline_overall: float | None
    regressions: list[Change]  # passed in the baseline, failed now
    fixed: list[Change]  # failed in the baseline, passed now

    @property
    def delta(self) -> float | None:
        if self.overall is None or self.baseline_overall is None:
            return None
        return round(self.overall - self.baseline_overall, 4)


def run_compare(run: Run, baseline: Run | None = None) -> Comparison:
    baseline = baseline if baseline is not None else run_baseline(run)
    now = grader_rates(run)
    before = grader_rates(baseline) if baseline else {}
    graders: dict[str, dict[str, Any]] = {}
    for name in sorted(set(now) | set(before)):
        rate = now.get(name, {}).get("pass_rate")
        base = before.get(name, {}).get("pass_rate")
        graders[name] = {
            **now.get(name, {"kind": before.get(name, {}).get("kind", ""), "total": 0, "passed": 0}),
            "pass_rate": rate,
            "baseline_pass_rate": base,
            "delta": None if rate is None or base is None else round(rate - base, 4),
        }
    regressions: list[Change] = []
    fixed: list[Change] = []
    if baseline is not None:
        earlier = dict(Result.objects.filter(run=baseline).values_list("case_id", "status"))
        results = Result.objects.filter(run=run, case_id__in=list(earlier)).select_related("case")
        failing = _failing_graders(run)
        for result in results:
            was = earlier[result.case_id]
            change = Change(
                result.case_id,
                result.case.question,
                was,
                result.status,
                result.pk,
                failing.get(result.pk, []),
            )
            if was == Result.Status.PASSED and result.status == Result.Status.FAILED:
                regressions.append(change)
            elif was == Result.Status.FAILED and result.status == Result.Status.PASSED:
                fixed.append(change)
    return Comparison(
        baseline=baseline,
        graders=graders,
        overall=overall_pass_rate(run_progress(run).counts),
        baseline_overall=overall_pass_rate(run_progress(baseline).counts) if baseline else None,
        regressions=regressions,
        fixed=fixed,
    )


def _failing_graders(run: Run) -> dict[int, list[str]]:
    failing: dict[int, list[str]] = defaultdict(list)
    for result_id, grader in Grade.objects.filter(result__run=run, passed=False, counted=True).values_list(
        "result_id", "grader"
    ):
        failing[result_id].append(grader)
    return failing


def run_summary(run: Run, baseline: Run | None = None) -> dict[str, Any]:
    """Everything the CLI prints and the run page shows: counts, pass rates, regressions, cost."""
    progress = run_progress(run)
    comparison = run_compare(run, baseline)
    return {
        "run": run.pk,
        "suite": run.suite.name,
        "status": run.status,
        "model": run.model,
        "prompt_version": run.prompt.version,
        "seed": run.seed,
        "temperature": run.temperature,
        "judge_model": run.judge_model or None,
        "counts": {**progress.counts, "total": progress.total},
        "errored": progress.counts.get(Result.Status.ERRORED, 0),
        "pass_rate": comparison.overall,
        "graders": comparison.graders,
        "by_answer_source": rates_by_answer_source(run),
        "baseline": comparison.baseline.pk if comparison.baseline else None,
        "baseline_pass_rate": comparison.baseline_overall,
        "delta": comparison.delta,
        "regressions": [
            {"case": c.case_id, "question": c.question, "result": c.result_id, "failing": c.failing}
            for c in comparison.regressions
        ],
        "fixed": [{"case": c.case_id, "question": c.question} for c in comparison.fixed],
        **run_cost(run),
        "duration_s": run_duration(run),
    }


@dataclass(frozen=True)
class SuiteRow:
    suite: Suite
    cases: int
    last_run: Run | None


def suites_overview() -> list[SuiteRow]:
    suites = Suite.objects.annotate(case_count=Count("cases")).order_by("name")
    return [
        SuiteRow(suite, suite.case_count, suite.runs.order_by("-created_at", "-pk").first())
        for suite in suites
    ]


@dataclass(frozen=True)
class RunRow:
    run: Run
    progress: Progress
    pass_rate: float | None
    cost_usd: float
    duration_s: float | None


def runs_overview(suite: Suite | None = None, *, limit: int = 30) -> list[RunRow]:
    runs = Run.objects.select_related("suite", "prompt").order_by("-created_at", "-pk")
    if suite is not None:
        runs = runs.filter(suite=suite)
    rows = []
    for run in runs[:limit]:
        progress = run_progress(run)
        rows.append(
            RunRow(
                run,
                progress,
                overall_pass_rate(progress.counts),
                run_cost(run)["cost_usd"],
                run_duration(run),
            )
        )
    return rows


def pass_rate_history(suite: Suite, *, limit: int = 30) -> list[tuple[Run, dict[str, float | None]]]:
    """Completed runs of the suite, oldest first, with each grader's pass rate (for the chart)."""
    runs = list(
        Run.objects.filter(suite=suite, status=Run.Status.COMPLETED).order_by("-created_at", "-pk")[:limit]
    )
    history = []
    for run in reversed(runs):
        rates = run.summary.get("graders") if run.summary else None
        if not rates:
            rates = grader_rates(run)
        history.append((run, {name: entry.get("pass_rate") for name, entry in rates.items()}))
    return history


def results_of(run: Run) -> list[Result]:
    return list(
        Result.objects.filter(run=run)
        .select_related("case", "answer")
        .prefetch_related("grades")
        .order_by("case_id")
    )
