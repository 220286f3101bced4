"""The scheduler examples in examples/ run: their commands, on a small tree, here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import jpeg_bytes, photo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _setup(tmp_path: Path, model: Path) -> dict[str, str]:
    store = tmp_path / "store"
    store.mkdir()
    for i in range(3):
        (store / f"{i}.jpg").write_bytes(jpeg_bytes(photo(48, 48, seed=i)))
    state = tmp_path / "state"
    (state / "textfile").mkdir(parents=True)
    return {
        "/data/store": str(store),
        "/var/lib/aiscan": str(state),
        "/var/lib/node_exporter/textfile": str(state / "textfile"),
        "aiscan ": f"{sys.executable} -m aiscan.scanner.cli --model {model} ",
    }


def _run(command: str, swap: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for old, new in swap.items():
        command = command.replace(old, new)
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)


def test_crontab_line_runs(tiny_model: Path, tmp_path: Path) -> None:
    (line,) = [ln for ln in (EXAMPLES / "crontab").read_text().splitlines() if ln[:1].isdigit()]
    command = line.split(None, 5)[5].replace("\\%", "%")  # cron passes \% on as %
    swap = _setup(tmp_path, tiny_model)
    for _night in (1, 2):  # a second run the same day continues that output
        proc = _run(command, swap)
        assert proc.returncode == 0, proc.stderr
    state = tmp_path / "state"
    assert (state / "scans.db").is_file() and list(state.glob("night-*.csv"))
    assert "aiscan_state_files" in (state / "textfile" / "aiscan.prom").read_text()


def test_systemd_service_command_runs(tiny_model: Path, tmp_path: Path) -> None:
    unit = (EXAMPLES / "aiscan-nightly.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    command = exec_start.replace("%%", "%")  # systemd's own escaping
    assert command.startswith("/bin/sh -c '") and command.endswith("'")
    proc = _run(command[len("/bin/sh -c '") : -1], _setup(tmp_path, tiny_model))
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "state").glob("night-*.csv"))


def test_kubernetes_manifest_parses() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((EXAMPLES / "kubernetes-cronjob.yaml").read_text())
    assert doc["kind"] == "CronJob" and doc["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "--state /state/scans.db" in " ".join(container["args"])


def test_slurm_array_script_runs_one_task(tiny_model: Path, tmp_path: Path) -> None:
    swap = _setup(tmp_path, tiny_model)
    script = (EXAMPLES / "slurm-array.sh").read_text()
    for old, new in swap.items():
        script = script.replace(old, new)
    path = tmp_path / "task.sh"
    path.write_text(script)
    env = dict(os.environ, SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_TASK_ID="1")
    work = tmp_path / "work"
    proc = subprocess.run(
        ["bash", str(path), swap["/data/store"], str(work)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (work / "part-1-of-2.csv").is_file()
