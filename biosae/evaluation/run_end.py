"""What the end of a run prints: on success, what the default run found and which files to open;
on failure, the log of each failed job.

The Snakefile's ``onsuccess:`` and ``onerror:`` call :func:`print_run_end` and
:func:`print_failed_job_logs`. Both only read files (metrics.json through biosae/layout.py,
Snakemake's own log), and neither raises: what a finished or failed run did stays as it is
whatever they find.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from biosae import layout
from biosae.evaluation.layer_profile import peak_sentence, profile_rows
from biosae.evaluation.method_summary import verdict_lines
from biosae.evaluation.report import expected_result
from biosae.io import read_json

REPORT_COMMAND = "snakemake --report report.html"

# Snakemake's block for a failed job: "Error in rule <name>:", then indented lines, one of them
# "log: <files> (check log file(s) for error details)" where the rule declares a log.
_ERROR_IN_RULE = re.compile(r"^Error in rule (\S+):\s*$")
_LOG_LINE = re.compile(r"^\s+log: (.+?)(?: \(check log file\(s\) for error details\))?\s*$")


def run_end_lines(
    default_seed: int, default_layer: int, layers: Iterable[int], n_layer: int | None, directory: str | Path = "."
) -> list[str]:
    """What the default run found, as lines to print: its expected results (PASS / FAIL), the layer
    where the SAE's causal effect peaks and the SAE against the best other method there (as the
    summary's layer profile says it), and the files to open. ``layers``: the profile's layers of
    the default seed; ``directory``: the run's working directory. [] when the default run's
    metrics.json is missing."""
    directory = Path(directory)
    metrics_path = directory / layout.eval_metrics("")
    if not metrics_path.is_file():
        return []
    metrics = read_json(metrics_path)
    entries = metrics.get("expected_results") or []
    passed = sum(entry.get("passed") is True for entry in entries)
    lines = [
        f"biosae: the run is finished. Expected results of {layout.eval_metrics('')} "
        f"(layer {metrics.get('layer')}): {passed} of {len(entries)} pass",
    ]
    for entry in entries:
        verdict, text = expected_result(entry)
        lines.append(f"  {verdict:<4} {text}")

    profile = [metrics]
    for layer in layers:
        path = directory / layout.eval_metrics(layout.run_prefix(default_seed, layer, default_seed, default_layer))
        if layer != default_layer and path.is_file():
            profile.append(read_json(path))
    rows = profile_rows(profile, n_layer)
    # one layer has no peak to speak of: the methods' verdict at that layer instead
    found = peak_sentence(rows, n_layer, default_layer) if len(rows) > 1 else None
    if found:
        lines.append(found)
    else:
        lines += [
            line.removeprefix("- ").replace("**", "") for line in verdict_lines(metrics, metrics.get("cells") or [])
        ]

    lines += [
        "Open:",
        f"  {layout.eval_summary('')}  (the findings, the layer profile first)",
        f"  {layout.eval_figures('')}/  (the figures)",
        f"  {REPORT_COMMAND}  (every table and figure in one page; add this run's --configfile, if any)",
    ]
    if (directory / layout.extra_questions_summary("")).is_file():
        lines.append(f"  {layout.extra_questions_summary('')}  (your questions of evaluate.extra_questions)")
    return lines


def print_run_end(
    targets: Iterable,
    default_seed: int,
    default_layer: int,
    layers: Iterable[int],
    n_layer: int | None,
    directory: str | Path = ".",
) -> None:
    """``onsuccess:``: print :func:`run_end_lines` when this invocation's targets include the default
    run's metrics.json (the default target does; a run of other targets prints nothing). Never raises."""
    try:
        if layout.eval_metrics("") not in {str(target) for target in targets}:
            return
        lines = run_end_lines(default_seed, default_layer, layers, n_layer, directory)
    except Exception as error:  # the run succeeded: a summary that cannot be read must not fail it
        lines = [f"biosae: no summary of the run ({type(error).__name__}: {error})"]
    if lines:
        print("\n".join(lines), flush=True)


def failed_job_logs(snakemake_log: str) -> list[tuple[str, str | None]]:
    """(rule, its log file or None) of each failed job that Snakemake's log text reports."""
    failed = []
    lines = snakemake_log.splitlines()
    for number, line in enumerate(lines):
        match = _ERROR_IN_RULE.match(line)
        if not match:
            continue
        log = None
        for following in lines[number + 1 :]:
            if not following.startswith((" ", "\t")):
                break
            if found := _LOG_LINE.match(following):
                log = found.group(1)
                break
        failed.append((match.group(1), log))
    return list(dict.fromkeys(failed))


def failed_jobs_line(failed: list[tuple[str, str | None]]) -> str:
    """One line: each failed job's log, or where the jobs' logs lie when Snakemake's log names none."""
    if not any(log for _, log in failed):
        return (
            f"biosae: a job failed; each job's log is {layout.log('', '<rule>')} "
            f"({layout.LOGS}/sweep/... for the other seeds and layers)"
        )
    logs = [f"{log} (rule {rule})" if log else f"rule {rule} (no log file: its error is above)" for rule, log in failed]
    if len(failed) == 1:
        return f"biosae: a job failed; its log: {logs[0]}"
    return f"biosae: {len(failed)} jobs failed; their logs: {', '.join(logs)}"


def print_failed_job_logs(snakemake_logs: Iterable[str | Path]) -> None:
    """``onerror:``: one last line naming the log file of each failed job, from Snakemake's log
    (the paths in ``snakemake_logs``); the logs/ directory when that log cannot be read. Never raises."""
    failed = []
    try:
        for path in snakemake_logs or ():
            failed += failed_job_logs(Path(path).read_text(errors="replace"))
    except Exception:  # the line below still points at logs/
        failed = []
    print(failed_jobs_line(list(dict.fromkeys(failed))), file=sys.stderr, flush=True)
