"""Reading Snakemake's "Job stats:" table, the one place that knows its layout (tests, bench)."""

from __future__ import annotations


def job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats:' table of a (dry) run's output; {} without one."""
    lines = output.splitlines()
    jobs: dict[str, int] = {}
    if "Job stats:" in lines:
        for line in lines[lines.index("Job stats:") + 3 :]:  # header, column names, dashes
            parts = line.split()
            if len(parts) != 2 or parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs
