"""--engine ray: the same rows as the local engine, on a local Ray instance (2 CPUs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from aiscan.scanner.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    chaos = tmp_path_factory.mktemp("chaos") / "killed-once"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"AISCAN_CHAOS_KILL_ONCE": str(chaos)}},
    )
    yield chaos
    ray.shutdown()


def test_ray_scan_gives_the_local_rows_even_when_a_worker_dies(
    local_ray: Path, bad_tree: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    root = str(Path(next(iter(bad_tree))).parent)
    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        args = [root, "--out", str(out), "--model", str(tiny_model), "--batch-size", "3"]
        assert main([*args, "--engine", engine, "-q"]) == 1  # the tree has bad files
        outs[engine] = out.read_bytes()
    assert local_ray.exists()  # a decode worker was killed and its task retried...
    assert outs["ray"] == outs["local"]  # ...and every row is there once, as locally


def test_ray_engine_resumes_and_writes_parquet(
    local_ray: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from aiscan.scanner.output.formats import read_rows
    from tests.conftest import jpeg_bytes, photo

    tree = tmp_path / "t"
    tree.mkdir()
    for i in range(7):
        (tree / f"{i}.jpg").write_bytes(jpeg_bytes(photo(48, 48, seed=i)))
    out = tmp_path / "v.parquet"
    args = [str(tree), "--out", str(out), "--model", str(tiny_model), "--engine", "ray", "-q"]
    assert main([*args, "--format", "parquet"]) == 0
    (tree / "late.jpg").write_bytes(jpeg_bytes(photo(40, 40)))
    assert main([*args, "--format", "parquet", "--resume"]) == 0
    paths = [r.path for r in read_rows(out)]
    assert len(paths) == len(set(paths)) == 8 and os.path.basename(paths[-1]) == "late.jpg"


def test_ray_engine_in_small_blocks_gives_the_local_engines_rows(
    local_ray: Path, bad_tree: dict[str, str], tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file list reaches Ray's object store in blocks (here 3 files each, for 10
    files) and one dataset streams them: the rows are the local engine's, in order, each
    file once."""
    from aiscan.scanner.core.discovery import discover
    from aiscan.scanner.engines import EngineSpec, LocalEngine, ray_data
    from aiscan.scanner.engines.ray_data import RayEngine
    from aiscan.scanner.run.config import DetectorConfig

    monkeypatch.setattr(ray_data, "BLOCK_FILES", 3)
    config = DetectorConfig(model=tiny_model, device="cpu", batch_size=2, decoder="cpu")
    spec = EngineSpec(config.open_model(), config.decode_spec)
    root = str(Path(next(iter(bad_tree))).parent)
    local = [r for b in LocalEngine(spec).run(discover([root])) for r in b.rows]
    remote = [r for b in RayEngine(spec).run(discover([root])) for r in b.rows]
    assert len(local) == len(bad_tree) == 10
    assert remote == local


def test_a_decode_past_its_time_on_ray_is_an_error_row(
    local_ray: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """The local engine's per-file time budget holds on Ray too: a 36 MP PNG cannot be
    decoded in 10 ms; its row says the decode was abandoned, and the small image's row
    is there too."""
    from PIL import Image

    from aiscan.scanner.core.discovery import discover
    from aiscan.scanner.engines import EngineSpec
    from aiscan.scanner.engines.ray_data import RayEngine
    from aiscan.scanner.run.config import DetectorConfig
    from tests.conftest import jpeg_bytes, photo

    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.jpg").write_bytes(jpeg_bytes(photo(40, 30)))
    Image.new("RGB", (6000, 6000)).save(tree / "big.png")
    config = DetectorConfig(model=tiny_model, device="cpu", decode_timeout=0.01, decoder="cpu")
    spec = EngineSpec(config.open_model(), config.decode_spec)
    runs = RayEngine(spec).run(discover([str(tree)]))
    rows = {Path(r.path).name: r for b in runs for r in b.rows}
    assert rows["big.png"].status == "error" and "--decode-timeout" in rows["big.png"].error
    assert sorted(rows) == ["a.jpg", "big.png"]  # every file once


def test_ray_refuses_the_states_verdict_reuse(tiny_model: Path, tmp_path: Path) -> None:
    from aiscan.scanner.core.errors import ConfigError
    from aiscan.scanner.engines import EngineSpec
    from aiscan.scanner.engines.ray_data import RayEngine
    from aiscan.scanner.run.config import DetectorConfig, ScanConfig

    with pytest.raises(ConfigError, match="--engine ray cannot reuse"):
        ScanConfig(paths=(str(tmp_path),), engine="ray", state=tmp_path / "s.db", hash_files=True)
    # without --sha256 the state works with Ray as with the local engine
    ScanConfig(paths=(str(tmp_path),), engine="ray", state=tmp_path / "s.db")
    config = DetectorConfig(model=tiny_model, device="cpu")
    spec = EngineSpec(config.open_model(), config.decode_spec, known=lambda _: 0.5)
    with pytest.raises(ConfigError, match="--engine ray cannot reuse"):
        RayEngine(spec)


def test_cpu_actors_fit_on_one_node_each() -> None:
    """An actor lives on one node: on two nodes of one CPU, a two-thread actor asks for
    one CPU (asking for two left it pending for ever on the two-node benchmark cluster),
    and each node holds as many actors as fit in it."""
    from aiscan.scanner.engines.ray_data import actor_slots

    assert actor_slots([1.0, 1.0], 2) == (2, 1)
    assert actor_slots([2.0], 2) == (1, 2)
    assert actor_slots([4.0, 2.0], 2) == (3, 2)
    assert actor_slots([3.0], 2) == (1, 2)
    assert actor_slots([16.0, 0.0], 4) == (4, 4)  # a node without CPUs holds none
    assert actor_slots([], 2) == (1, 1)
