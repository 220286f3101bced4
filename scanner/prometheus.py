"""A run's figures in the Prometheus text exposition format, for node exporter's textfile
collector: point ``--collector.textfile.directory`` at the folder of ``--metrics-file``.
Written atomically (temporary file, then rename), as that collector requires."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiscan.model.files import write_atomic

if TYPE_CHECKING:
    from .run.summary import ScanSummary


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(summary: ScanSummary, exit_status: int) -> str:
    """The metrics text of one run."""
    model = f'model="{_label(summary.model_id)}"'
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: dict[str, float]) -> None:
        out.append(f"# HELP aiscan_{name} {help_text}")
        out.append(f"# TYPE aiscan_{name} {kind}")
        for labels, value in samples.items():
            out.append(f"aiscan_{name}{{{labels}}} {value:g}")

    metric(
        "files",
        "gauge",
        "Rows of the last run, by status (this run and resumed).",
        {f'status="{k}",{model}': v for k, v in summary.statuses.items()},
    )
    metric(
        "verdicts",
        "gauge",
        "Verdicts of the last run.",
        {f'verdict="{k}",{model}': v for k, v in sorted(summary.verdicts.items())},
    )
    metric("images_per_second", "gauge", "Classification rate of the last run.",
           {model: summary.images_per_s})  # fmt: skip
    metric("run_seconds", "gauge", "Wall time of the last run.", {model: summary.elapsed_s})
    metric("exit_status", "gauge", "Exit status of the last run.", {model: exit_status})
    metric("interrupted", "gauge", "1 when the last run was interrupted.",
           {model: int(summary.interrupted)})  # fmt: skip
    state = summary.state or {}
    kinds = ("new", "changed", "rejudged", "unchanged", "reused", "deleted")
    if state:
        metric(
            "state_files",
            "gauge",
            "Files of the last nightly run by what the state knew of them.",
            {f'kind="{k}",{model}': state.get(k, 0) for k in kinds},
        )
        flagged = (state.get("drift") or {}).get("flagged", [])
        metric("drift", "gauge", "1 when tonight drifted past a bound against last night.",
               {model: int(bool(flagged))})  # fmt: skip
    return "\n".join(out) + "\n"


def write_metrics(path: str | Path, summary: ScanSummary, exit_status: int) -> None:
    path = Path(path)
    write_atomic(path, render(summary, exit_status))
