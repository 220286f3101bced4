"""The tests can fail: each mutation breaks the code on purpose, in a copy of the tracked
files, and the tests named for it must then fail. Exit 0 when every mutation is caught,
1 when one survives (or no longer applies: the code it names has changed), 2 on bad use.

    python tests/mutation_check.py            # every mutation (a few minutes on 2 cores)
    python tests/mutation_check.py --list
    python tests/mutation_check.py NAME...    # some of them

The working tree is never touched. The copy's own code is what the tests import: a
folder of links maps each ``aiscan.*`` package to the copy's folder, put first on
``PYTHONPATH`` (child processes the tests start inherit it). ``.ci/run`` runs this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The import package of each top-level folder (pyproject's package-dir).
PACKAGES = {
    "model": "model",
    "scanner": "scanner",
    "export": "export",
    "train": "train",
    "benchmarks": "benchmarks",
}


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once) by ``new`` in ``file``; then
    ``tests`` (pytest node ids) must fail. ``env``: extra environment for the run."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


MUTATIONS = (
    Mutation(
        "the int8rr graph quantises a whole batch together",
        "model/clip_graph.py",
        "        model = requantise(one_image(model))",
        "        model = requantise(model)",
        ("tests/test_clip.py::test_real_encoder_int8rr_features_are_golden_and_each_images_own",),
    ),
    Mutation(
        "a decode that ended past its budget between two looks counts as in time",
        "scanner/engines/pool.py",
        "            if task.ran_s is not None and task.ran_s > timeout_s:",
        "            if False:",
        ("tests/test_pool.py",),
    ),
    Mutation(
        "a lazy upward import in the core",
        "scanner/core/rows.py",
        "#: What judged a row: (model, band), :attr:`Row.judge`.",
        "def _upward() -> object:  # noqa\n    from ..run import config\n\n    return config\n\n\n"
        "#: What judged a row: (model, band), :attr:`Row.judge`.",
        ("tests/test_layout.py",),
    ),
    Mutation(
        "verdicts ignore the threshold",
        "scanner/core/classify.py",
        'verdict = "" if p_ai is None else verdict_of(p_ai, self.threshold, self.real_below)',
        'verdict = "" if p_ai is None else "real"',
        ("tests/test_judges.py::test_rows_record_their_judge", "tests/test_scan.py"),
    ),
    Mutation(
        "rows forget their band",
        "scanner/core/classify.py",
        'band=self.band if verdict else "",',
        'band="",',
        ("tests/test_judges.py",),
    ),
    Mutation(
        "resume compares models only",
        "scanner/run/pipeline.py",
        "        if judge != mine:\n            others[judge] += n",
        "        if judge[0] != mine[0]:\n            others[judge] += n",
        ("tests/test_judges.py::test_a_killed_run_resumed_with_another_band_is_refused",),
    ),
    Mutation(
        "merge takes any judge",
        "scanner/nightly/shards.py",
        "    if not mix_models:\n        _one_judge(parts)",
        "    pass",
        ("tests/test_judges.py::test_merge_refuses_shards_judged_otherwise",),
    ),
    Mutation(
        "the band is not validated as a whole",
        "scanner/core/classify.py",
        "    if below > above:\n        where_ai",
        "    if False:\n        where_ai",
        ("tests/test_judges.py::test_the_band_is_validated_as_a_whole",),
    ),
    Mutation(
        "metadata hides the pixels again",
        "model/pixels.py",
        "        stripped = _pixels_only(source)",
        "        stripped = None",
        ("tests/test_hostile_meta.py",),
    ),
    Mutation(
        "control characters reach the terminal",
        "model/console.py",
        "    return _UNSAFE.sub(_escaped, str(text))",
        "    return str(text)",
        ("tests/test_hostile_meta.py::test_file_names_reach_the_terminal_escaped",),
    ),
    Mutation(
        "a cached file is used unverified",
        "model/cache.py",
        "        return bool(want) and sha256_of(target) == want",
        "        return target.exists()",
        ("tests/test_cache.py::test_a_corrupt_or_stale_cached_file_is_rebuilt_never_used",),
    ),
    Mutation(
        "the canonical step is skipped",
        "model/pixels.py",
        "    img = canonicalise(to_rgb(img, spec.background), spec)",
        "    img = to_rgb(img, spec.background)",
        ("tests/test_preprocess.py::test_the_canonical_step_gives_the_training_copies_pixels",),
    ),
    Mutation(
        "the edge ignores the worst kind",
        "train/protocol.py",
        "        if t > edge:\n            edge, binding = t, kind",
        "        pass",
        (
            "tests/test_protocol.py::test_the_band_edge_holds_the_worst_real_kind_to_twice_the_promise",
        ),
    ),
    Mutation(
        "bench result named from a wrong core count",
        "benchmarks/cli.py",
        "else f\"cpu{results['machine']['cores']}core\"",
        'else "cpu1core"',
        ("tests/test_bench.py::test_quick_run_writes_json_and_csv",),
    ),
    Mutation(
        "exit 1 lost for error rows",
        "scanner/cli/scan.py",
        "        status = EXIT_FILE_ERRORS",
        "        status = EXIT_OK",
        ("tests/test_api.py",),
    ),
    Mutation(
        "the decode budget does not wait",
        "model/pixels.py",
        "            self._cond.wait_for(lambda: self._free >= nbytes)",
        "            pass",
        ("tests/test_limits.py::test_decode_budget_makes_large_decodes_take_turns",),
    ),
    Mutation(
        "a tool's error spills a second line",
        "model/console.py",
        "        print(json_line(record), file=sys.stderr, flush=True)\n        return status\n"
        "    Console(",
        "        print(json_line(record), file=sys.stderr, flush=True)\n        return status\n"
        '    print("extra", file=sys.stderr)\n    Console(',
        (
            "tests/test_export.py::test_every_console_script_turns_a_real_error_into_one_line_exit_2",
        ),
    ),
    Mutation(
        "the format ignores the suffix",
        "scanner/output/formats.py",
        "        fmt = named\n",
        '        fmt = "csv"\n',
        ("tests/test_output.py::test_scan_merge_and_export_state_follow_the_suffix",),
    ),
    Mutation(
        "Ray accepts known verdicts",
        "scanner/engines/ray_data.py",
        "        if spec.known is not None:",
        "        if False:",
        ("tests/test_ray.py::test_ray_refuses_the_states_verdict_reuse",),
    ),
    Mutation(
        "the unreadable folder reads as root",
        "tests/conftest.py",
        "preexec_fn=_drop_dac_override if os.geteuid() == 0 else None,",
        "preexec_fn=None,",
        ("tests/test_discover.py::test_unlistable_directory_becomes_an_error_row",),
    ),
    Mutation(
        "an unlisted skip passes under CI",
        "tests/test_layout.py",
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport pytest\n\n"
        'pytestmark = pytest.mark.skip("deliberately skipped")\n',
        ("tests/test_layout.py",),
        (("CI", "true"),),
    ),
)


def tracked_copy(dest: Path) -> None:
    """The tracked files (and untracked ones git does not ignore) of the checkout."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for raw in names:
        if not raw:
            continue
        rel = Path(os.fsdecode(raw))
        src = ROOT / rel
        if not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def link_packages(copy: Path, links: Path) -> None:
    """``links/aiscan/<package>`` -> the copy's folder, for each aiscan package."""
    (links / "aiscan").mkdir(parents=True)
    for name, folder in PACKAGES.items():
        (links / "aiscan" / name).symlink_to(copy / folder, target_is_directory=True)


def apply(copy: Path, m: Mutation) -> str:
    """Apply ``m`` in ``copy``; "" when applied, else why not."""
    path = copy / m.file
    text = path.read_text(encoding="utf-8")
    found = text.count(m.old)
    if found != 1:
        return f"the code it breaks is {'not there' if not found else f'there {found} times'}"
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")
    return ""


def caught(copy: Path, links: Path, m: Mutation) -> tuple[bool, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(links), str(copy)]))
    env.pop("CI", None)
    env.update(dict(m.env))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
        cwd=copy, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    first = next(
        (x for x in lines if x.startswith(("FAILED", "ERROR"))), lines[-1] if lines else ""
    )
    return done.returncode != 0, first[:160]


def _targets(chosen: list[Mutation]) -> tuple[str, ...]:
    """Every test the chosen mutations name, once (a whole file covers its tests)."""
    files = {t for m in chosen for t in m.tests if "::" not in t}
    picked = [t for m in chosen for t in m.tests if t.split("::")[0] not in files or "::" not in t]
    return tuple(dict.fromkeys(picked))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests/mutation_check.py", description=__doc__)
    p.add_argument("names", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations")
    args = p.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(m.name)
        return 0
    chosen = [m for m in MUTATIONS if not args.names or m.name in args.names]
    if len(chosen) != len(set(args.names) or chosen):
        unknown = sorted(set(args.names) - {m.name for m in MUTATIONS})
        print(f"mutation_check: no such mutation: {unknown}", file=sys.stderr)
        return 2
    survived = 0
    with tempfile.TemporaryDirectory(prefix="aiscan-mutations-") as tmp:
        copy, links = Path(tmp) / "copy", Path(tmp) / "links"
        tracked_copy(copy)
        link_packages(copy, links)
        control = Mutation("none (the copy as it is)", "", "", "", _targets(chosen))
        failed, first = caught(copy, links, control)
        if failed:  # a mutation is only caught if its tests pass without it
            print(f"mutation_check: the copy fails its own tests: {first}", file=sys.stderr)
            return 2
        for m in chosen:
            copy, links = Path(tmp) / "copy", Path(tmp) / "links"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.rmtree(links, ignore_errors=True)
            tracked_copy(copy)
            link_packages(copy, links)
            why = apply(copy, m)
            if why:
                print(f"NOT APPLIED: {m.name}: {why}")
                survived += 1
                continue
            ok, first = caught(copy, links, m)
            print(f"{'caught' if ok else 'SURVIVED'}: {m.name} -> {first}", flush=True)
            survived += not ok
    print(f"mutation_check: {len(chosen) - survived} of {len(chosen)} caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
