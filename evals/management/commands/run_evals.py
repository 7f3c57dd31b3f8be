from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from evals import selectors, services
from evals.models import Result, Run, Suite


class Command(BaseCommand):
    help = (
        "Run an evaluation suite and report. By default the cases go to the Celery workers and this "
        "waits for them; --sync answers them in this process. Exits 1 when the overall pass rate is "
        "below --fail-under or when a case that passed in the baseline fails now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--suite", required=True, help="The suite's name.")
        parser.add_argument(
            "--fail-under", type=_fraction, help="Minimum overall pass rate: 0.8 or 80 (percent)."
        )
        parser.add_argument("--json", action="store_true", help="Print the run summary as one JSON object.")
        parser.add_argument(
            "--baseline", type=int, help="Compare with this run id (default: the previous one)."
        )
        parser.add_argument("--sync", action="store_true", help="Run the cases here, one after another.")
        parser.add_argument("--timeout", type=float, default=3600.0, help="Seconds to wait for the workers.")
        parser.add_argument("--poll", type=float, default=2.0, help="Seconds between checks.")

    def handle(self, *args: Any, **options: Any) -> None:
        suite = Suite.objects.filter(name=options["suite"]).first()
        if suite is None:
            known = ", ".join(repr(s) for s in Suite.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No suite named {options['suite']!r}; the suites are: {known}.")
        if not suite.cases.exists():
            raise CommandError(f"The suite {suite.name!r} has no cases: import some with import_evals.")
        baseline = None
        if options["baseline"] is not None:
            baseline = Run.objects.filter(pk=options["baseline"], suite=suite).first()
            if baseline is None:
                raise CommandError(
                    f"No run {options['baseline']} of the suite {suite.name!r} to compare with."
                )

        run = services.run_start(
            suite=suite, baseline=baseline, trigger=Run.Trigger.CLI, enqueue=not options["sync"]
        )
        if options["sync"]:
            for result_id in run.results.order_by("pk").values_list("pk", flat=True):
                services.result_execute(result_id=result_id)
                self._progress(run)
        else:
            self._wait(run, timeout=options["timeout"], poll=options["poll"])
        run.refresh_from_db()
        summary = selectors.run_summary(run)
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2, default=str))
        else:
            self._show(summary)

        problems = []
        threshold = options["fail_under"]
        rate = summary["pass_rate"]
        if threshold is not None and (rate is None or rate < threshold):
            shown = "none" if rate is None else f"{rate:.1%}"
            problems.append(f"pass rate {shown} is below {threshold:.1%}")
        if summary["regressions"]:
            problems.append(
                f"{len(summary['regressions'])} case(s) regressed against run {summary['baseline']}"
            )
        if problems:
            raise CommandError("; ".join(problems) + ".", returncode=1)

    def _progress(self, run: Run) -> None:
        progress = selectors.run_progress(run)
        self.stderr.write(f"run {run.pk}: {progress.done}/{progress.total} done", ending="\r")

    def _wait(self, run: Run, *, timeout: float, poll: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            run.refresh_from_db(fields=["status"])
            if not run.is_active:
                self.stderr.write("")
                return
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Run {run.pk} did not finish within {timeout:.0f} s (is a Celery worker running?); it "
                    "goes on in the background: see the evals page.",
                    returncode=2,
                )
            self._progress(run)
            time.sleep(poll)

    def _show(self, summary: dict[str, Any]) -> None:
        def pct(value: float | None) -> str:
            return "—" if value is None else f"{value:.0%}"

        counts = summary["counts"]
        passed, failed = counts[Result.Status.PASSED], counts[Result.Status.FAILED]
        self.stdout.write(
            f"Run {summary['run']} of {summary['suite']}: {summary['status']} · {summary['model']} · prompt "
            f"v{summary['prompt_version']} · seed {summary['seed']}"
        )
        self.stdout.write(
            f"Pass rate {pct(summary['pass_rate'])} ({passed} passed, "
            f"{failed} failed, {summary['errored']} errored of {counts['total']})"
            + (
                f"; baseline run {summary['baseline']}: {pct(summary['baseline_pass_rate'])}"
                if summary["baseline"]
                else ""
            )
        )
        for name, grader in summary["graders"].items():
            delta = "" if grader["delta"] is None else f" ({grader['delta'] * 100:+.0f} pts)"
            trust = ""
            if grader.get("kind") == "model":
                trust = (
                    f" · judge agrees with people {pct(grader['agreement'])}"
                    if grader.get("agreement") is not None
                    else " · agreement not measured — not trusted"
                )
            rate = pct(grader["pass_rate"])
            self.stdout.write(f"  {name:<18} {rate:>5}  {grader['passed']}/{grader['total']}{delta}{trust}")
        for change in summary["regressions"]:
            failing = ", ".join(change["failing"])
            self.stdout.write(f"  REGRESSION case {change['case']}: {change['question'][:80]} ({failing})")
        self.stdout.write(
            f"Cost ${summary['cost_usd']:.4f} · {summary['prompt_tokens']} prompt + "
            f"{summary['completion_tokens']} completion tokens · {summary['duration_s']} s"
        )


def _fraction(text: str) -> float:
    value = float(text.rstrip("%"))
    if value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value
