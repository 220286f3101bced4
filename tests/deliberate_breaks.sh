#!/usr/bin/env bash
# Shows that the tests can fail: each case breaks the code on purpose (one sed), runs the
# test that must catch it, and restores the file. Prints "caught" or "NOT CAUGHT" per case.
# Usage: bash tests/deliberate_breaks.sh   (from a checkout with .venv; a few minutes)
set -u
backup=$(mktemp) log=$(mktemp) current=""
# interrupted mid-case: the broken file gets its backup back
trap '[ -n "$current" ] && cp "$backup" "$current"; rm -f "$backup" "$log"' EXIT
cd "$(dirname "$0")/.." && . .venv/bin/activate
run() {  # run NAME FILE SED_EXPR TEST...
  local name=$1 file=$2 expr=$3; shift 3
  cp "$file" "$backup"
  current=$file
  sed -i "$expr" "$file"
  if cmp -s "$file" "$backup"; then echo "BREAK NOT APPLIED: $name"; return; fi
  if timeout 600 python -m pytest -q -x -p no:cacheprovider "$@" >"$log" 2>&1; then
    echo "NOT CAUGHT: $name"
  else
    echo "caught: $name -> $(grep -m1 -E '^FAILED|^ERROR' "$log" | cut -c1-150)"
  fi
  cp "$backup" "$file"
  current=""
}
run "a lazy upward import in the core" scanner/core/rows.py '$a def _upward():  # noqa\n    from ..run import config\n\n    return config' tests/test_layout.py
run "verdicts ignore the threshold" scanner/core/classify.py 's/verdict = "" if p_ai is None else verdict_of(p_ai, self.threshold, self.real_below)/verdict = "" if p_ai is None else "real"/' tests/test_scan.py::test_bad_files_each_get_a_row_and_the_scan_finishes
run "bench result named from a wrong core count" benchmarks/cli.py "s/else f\"cpu{results\['machine'\]\['cores'\]}core\"/else \"cpu1core\"/" tests/test_bench.py::test_quick_run_writes_json_and_csv
run "exit 1 lost for error rows" scanner/cli/scan.py 's/        status = EXIT_FILE_ERRORS/        status = EXIT_OK/' tests/test_api.py
run "the decode budget does not wait" model/pixels.py 's/            self._cond.wait_for(lambda: self._free >= nbytes)/            pass/' tests/test_limits.py::test_decode_budget_makes_large_decodes_take_turns
run "a tool's error spills a second line" model/console.py 's/^def error_line(tool: str, message: object, status: int = 2) -> int:/&\n    print("extra", file=__import__("sys").stderr)/' "tests/test_export.py::test_every_console_script_turns_a_real_error_into_one_line_exit_2"
run "the state's columns drift from the schema" scanner/nightly/state.py 's/    values\["path"\], values\["sha256"\] = os.fsencode(row.path), row.sha256 or None/    values["path"], values["sha256"] = os.fsencode(row.path), row.sha256 or "?"/' tests/test_output.py::test_every_store_takes_its_columns_from_the_row_schema
run "the format ignores the suffix" scanner/output/formats.py 's/        fmt = named$/        fmt = "csv"/' tests/test_output.py::test_scan_merge_and_export_state_follow_the_suffix
run "Ray accepts known verdicts" scanner/engines/ray_data.py 's/        if spec.known is not None:/        if False:/' tests/test_ray.py::test_ray_refuses_the_states_verdict_reuse
run "the unreadable folder reads as root" tests/conftest.py 's/preexec_fn=_drop_dac_override if os.geteuid() == 0 else None,/preexec_fn=None,/' tests/test_discover.py::test_unlistable_directory_becomes_an_error_row
# a skip off the allow-list under CI: this machine has no Chromium, so the report test skips
if CI=true timeout 600 python -m pytest -q -p no:cacheprovider tests/test_report.py >"$log" 2>&1; then
  echo "NOT CAUGHT: an unlisted skip under CI"
else
  echo "caught: an unlisted skip under CI -> $(grep -m1 'test_report' "$log" | cut -c1-150)"
fi
git status --short
