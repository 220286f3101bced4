"""The helper tools on a plain install: a missing extra is one line and exit 2.

Each run is a subprocess whose ``sitecustomize`` makes the named modules unimportable,
as on a machine where only ``pip install .`` ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_BLOCK = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def _run(tmp_path: Path, blocked: set[str], module: str, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / f"site-{'-'.join(sorted(blocked))}"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCK.format(blocked=sorted(blocked)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.getcwd()]))
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def _labelled(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("ai", "real"):
        (root / label / "src").mkdir(parents=True)
        for i in range(3):
            img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / label / "src" / f"{i}.png")
    return root


NO_TORCH = {"torch", "torchvision", "timm"}


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("aiscan.train.cli", ["DATA", "--out", "RUN"]),
        ("aiscan.export.cli", ["--random-init", "--out", "m.onnx"]),
        ("aiscan.train.protocol_cli", ["probe", "DATA", "--arch", "x", "--out", "P"]),
    ],
)
def test_training_tools_without_torch_say_what_to_install(
    tmp_path: Path, module: str, args: list[str]
) -> None:
    data = _labelled(tmp_path / "data")
    args = [str(data) if a == "DATA" else str(tmp_path / a) if a.isupper() else a for a in args]
    proc = _run(tmp_path, NO_TORCH, module, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "pip install torch==2.14.1 torchvision==0.29.1" in proc.stderr


def test_eval_of_an_onnx_model_needs_no_torch(tiny_model: Path, tmp_path: Path) -> None:
    data = _labelled(tmp_path / "data")
    out = tmp_path / "report"
    proc = _run(
        tmp_path, NO_TORCH, "aiscan.train.eval_cli", str(tiny_model), str(data), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert list(out.glob("eval_*.json"))
    no_sklearn = _run(tmp_path, {"sklearn"}, "aiscan.train.eval_cli", str(tiny_model), str(data))
    assert no_sklearn.returncode == 2 and "aiscan-batch[eval]" in no_sklearn.stderr
    assert "Traceback" not in no_sklearn.stderr


def test_dali_is_unavailable_when_nvidia_cannot_be_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiscan.scanner.core.dali import dali_available

    monkeypatch.setitem(sys.modules, "nvidia", None)  # import nvidia -> ImportError
    monkeypatch.delitem(sys.modules, "nvidia.dali", raising=False)
    assert dali_available() is False


@pytest.mark.slow
def test_bench_without_dali_runs_its_plan_without_the_dali_runner(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A plain install (no DALI): ``aiscan-bench`` builds its plan, runs every other runner
    and writes its results, with no DALI timing in them."""
    res = tmp_path / "res"
    args = ["--quick", "--model", str(tiny_model), "--corpus", "1024px", "--images", "4"]
    args += ["--baselines", "ort", "--repeats", "1", "--cache-dir", str(tmp_path / "cache")]
    args += ["--data-dir", str(tmp_path / "none"), "--results-dir", str(res)]
    proc = _run(tmp_path, {"nvidia"}, "aiscan.benchmarks.cli", *args)
    assert proc.returncode == 0, proc.stderr
    (path,) = res.glob("throughput_*.json")
    runners = {t["runner"] for t in json.loads(path.read_text())["timings"]}
    assert not any("DALI" in r for r in runners)
    assert any(r.startswith("decode PIL") for r in runners) and len(runners) >= 4


def test_a_missing_core_module_is_not_disguised() -> None:
    from aiscan.model.console import install_hint

    with pytest.raises(ModuleNotFoundError):
        install_hint("aiscan-eval", ModuleNotFoundError("No module named 'numpy'", name="numpy"))


@pytest.mark.parametrize("spelling", ["data", "./data", "data/", "sub/../data", "ABS"])
def test_every_spelling_of_a_data_folder_works_from_another_folder(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    """Issue 20: relative folders, "..", "." and a trailing slash, from the folder a user
    happens to be in: the samples and aiscan-eval's report are the same."""
    from aiscan.train.data import find_samples
    from aiscan.train.eval_cli import main as eval_main

    _labelled(tmp_path / "data")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    given = str(tmp_path / "data") if spelling == "ABS" else spelling
    samples = find_samples(given)
    assert len(samples) == 6 and {s.source for s in samples} == {"src"}
    assert all(os.path.isabs(s.path) for s in samples)
    assert eval_main([str(tiny_model), given, "--out", "report"]) == 0
    assert list((tmp_path / "report").glob("eval_*.json"))


@pytest.mark.parametrize(
    ("module", "config"),
    [
        ("aiscan.scanner.cli.scan", "aiscan.scanner.run.config:ScanConfig"),
        ("aiscan.train.cli", "aiscan.train.loop:TrainConfig"),
        ("aiscan.benchmarks.cli", None),
        ("aiscan.export.cli", None),
        ("aiscan.train.eval_cli", None),
        ("aiscan.train.protocol_cli", None),
    ],
)
def test_help_shows_every_default_and_the_defaults_are_the_configs(
    module: str, config: str | None
) -> None:
    """Issue 20: ``--help`` names each option's default, and where a tool has a config,
    the parser's defaults are that config's own (declared once)."""
    import argparse
    import dataclasses
    import importlib

    parser = importlib.import_module(module).build_parser()
    parsers = [parser] + [
        sub
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)
        for sub in a.choices.values()
    ]
    for p in parsers:
        p.format_help()  # every help string expands
        for a in p._actions:
            unset = any(a.default is v for v in (None, False, argparse.SUPPRESS))
            flag_off = isinstance(a, argparse._StoreFalseAction)  # its default is not its effect
            if a.option_strings and not unset and not flag_off:
                if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                    continue
                helped = p._get_formatter()._expand_help(a)
                assert "default" in helped.lower(), (p.prog, a.dest)
    if config:
        mod, name = config.split(":")
        fields = {
            f.name: f for f in dataclasses.fields(getattr(importlib.import_module(mod), name))
        }
        for a in parser._actions:
            f = fields.get(a.dest)
            if f is not None and f.default is not dataclasses.MISSING and a.default is not None:
                assert a.default == f.default, a.dest


def test_eval_takes_a_shipped_model_by_name_and_writes_only_where_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: ``aiscan-eval fast DATA`` (no path inside site-packages to find) prints its
    table and leaves the current folder as it was; ``--out`` gets the report and plots."""
    from aiscan.train.eval_cli import main as eval_main

    _labelled(tmp_path / "data")
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    assert eval_main(["fast", str(tmp_path / "data")]) == 0
    assert list(work.iterdir()) == []
    assert eval_main(["fast", str(tmp_path / "data"), "--out", "rep"]) == 0
    assert sorted(p.suffix for p in (work / "rep").iterdir()) == [".json", ".png", ".png", ".png"]
