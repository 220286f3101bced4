"""Training, metrics, splits, export from a run: CPU, generated data, seconds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("sklearn")

from aiscan.train.data import (  # noqa: E402
    LABELS,
    Sample,
    find_samples,
    load_split,
    save_split,
    stratified_split,
)
from aiscan.train.metrics import binary_metrics, choose_threshold  # noqa: E402


def _dataset(root: Path, per_class: int = 24) -> Path:
    """AI images carry a fine checkerboard, real ones are smooth: learnable in an epoch."""
    rng = np.random.default_rng(0)
    for label in LABELS:
        for source in ("s1", "s2"):
            folder = root / label / source
            folder.mkdir(parents=True)
            for i in range(per_class // 2):
                base = rng.integers(60, 200, 3).astype(np.float32)
                img = np.ones((48, 48, 3), np.float32) * base
                if label == "ai":
                    img += 50 * (np.indices((48, 48)).sum(0) % 2)[..., None]
                img += rng.normal(0, 4, img.shape)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    (root / "ai" / "notes.txt").write_text("not an image")
    return root


def test_label_mapping_ai_is_index_0_and_positive() -> None:
    assert LABELS == ("ai", "real")
    assert Sample("x", 0, "s").is_ai and not Sample("x", 1, "s").is_ai


def test_split_is_stratified_by_label_and_source_and_reproducible(tmp_path: Path) -> None:
    samples = [
        Sample(f"/d/{lab}/{src}/{i}.jpg", lab, src)
        for lab in (0, 1)
        for src in ("a", "b", "c")
        for i in range(100)
    ]
    split = stratified_split(samples, seed=7)
    assert {k: len(v) for k, v in split.items()} == {"train": 432, "val": 78, "test": 90}
    for part in split.values():  # every (label, source) group in proportion
        counts = {(s.label, s.source) for s in part}
        assert len(counts) == 6
    assert stratified_split(list(reversed(samples)), seed=7) == split
    assert stratified_split(samples, seed=8) != split
    save_split(split, tmp_path / "split.csv")
    assert load_split(tmp_path / "split.csv") == split


def test_find_samples_reads_sources_from_folders(tmp_path: Path) -> None:
    samples = find_samples(_dataset(tmp_path / "data", per_class=4))
    assert len(samples) == 8  # notes.txt is not an image
    assert {s.source for s in samples} == {"s1", "s2"}
    with pytest.raises(ValueError, match="class folders"):
        find_samples(tmp_path / "data" / "ai")


def test_metrics_match_hand_computed_values() -> None:
    # The report's confusion matrix: TP 3345, TN 3375, FP 225, FN 225 (AI positive).
    is_ai = np.array([True] * 3570 + [False] * 3600)
    p_ai = np.array([0.9] * 3345 + [0.1] * 225 + [0.9] * 225 + [0.1] * 3375)
    m = binary_metrics(is_ai, p_ai, threshold=0.5)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (3345, 3375, 225, 225)
    assert m["accuracy"] == pytest.approx(6720 / 7170)
    assert m["precision"] == pytest.approx(3345 / 3570)
    assert m["recall"] == pytest.approx(3345 / 3570)
    assert m["specificity"] == pytest.approx(3375 / 3600)
    assert m["f1"] == pytest.approx(3345 / 3570)
    po, pe = 6720 / 7170, (3570 * 3570 + 3600 * 3600) / 7170**2
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))
    # p_ai of 0.9 is right 3345/3570 of the time, 0.1 is AI 225/3600 of the time:
    ece = (3570 * abs(0.9 - 3345 / 3570) + 3600 * abs(0.1 - 225 / 3600)) / 7170
    assert m["ece"] == pytest.approx(ece)


def test_threshold_choice_on_validation() -> None:
    is_ai = np.array([1, 1, 1, 0, 0, 0], bool)
    p_ai = np.array([0.9, 0.8, 0.35, 0.4, 0.2, 0.1])
    assert choose_threshold(is_ai, p_ai) == pytest.approx(0.35)  # F1 6/7 beats 0.8's 4/5
    assert choose_threshold(is_ai, p_ai, target_fpr=0.0) == pytest.approx(0.8)
    m = binary_metrics(is_ai, p_ai, 0.8)
    assert m["tpr_at_fpr_1pct"] == pytest.approx(2 / 3) and math.isclose(m["roc_auc"], 8 / 9)


@pytest.mark.slow
def test_tiny_run_learns_resumes_exports_and_evaluates(tmp_path: Path) -> None:
    from aiscan.export.from_run import export_run
    from aiscan.scanner.infer import Classifier
    from aiscan.train.evaluate import evaluate
    from aiscan.train.loop import TrainConfig, train

    data = _dataset(tmp_path / "data", per_class=40)
    cfg = TrainConfig(
        data_dir=str(data),
        out_dir=str(tmp_path / "run"),
        arch="test_efficientnet",
        epochs=2,
        batch_size=8,
        lr=2e-3,
        input_size=32,
        workers=0,
        seed=3,
    )
    first = train(cfg)
    assert len(first.epochs) == 2
    longer = dataclasses.replace(cfg, epochs=4)
    with pytest.raises(ValueError, match="other settings"):
        train(longer)  # a run folder belongs to one configuration
    losses = [e["train_loss"] for e in first.epochs]
    assert losses[-1] < losses[0]
    assert json.loads((tmp_path / "run" / "history.json").read_text())["best_epoch"] >= 0
    info = export_run(tmp_path / "run", tmp_path / "run" / "model.onnx")
    assert info.extra["parity"]["max_abs_diff_p_ai"] < 1e-4
    assert 0.0 <= info.threshold <= 1.0 and info.extra["validation"]["n"] > 0
    clf = Classifier(tmp_path / "run" / "model.onnx", "cpu")
    assert clf.info == info and clf.info.preprocessing.input_size == (32, 32)
    report = evaluate(tmp_path / "run", reencode=True)
    assert report["metrics"]["n"] == len(load_split(tmp_path / "run" / "split.csv")["test"])
    assert set(report["per_source"]) == {"ai/s1", "ai/s2", "real/s1", "real/s2"}
    assert all(Path(p).is_file() for p in report["plots"])
    assert "delta" in report["reencode_jpeg_q90"]


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    from aiscan.train.loop import TrainConfig, train

    with pytest.raises(ValueError, match="too few images"):
        train(
            TrainConfig(
                data_dir=str(_dataset(tmp_path / "few", per_class=8)),
                out_dir=str(tmp_path / "few-run"),
                arch="test_efficientnet",
            )
        )
    data = _dataset(tmp_path / "data", per_class=16)
    cfg = TrainConfig(
        data_dir=str(data),
        out_dir=str(tmp_path / "run"),
        arch="test_efficientnet",
        epochs=1,
        batch_size=8,
        input_size=32,
        workers=0,
    )
    train(cfg)
    events: list[str] = []
    history = train(cfg, lambda kind, _data: events.append(kind))
    assert events == ["resumed"] and len(history.epochs) == 1  # nothing left to do


def test_lite0_style_checkpoint_loads_by_order(tmp_path: Path) -> None:
    import timm

    from aiscan.train.model import create

    donor = timm.create_model("test_efficientnet", num_classes=1000)
    renamed = {
        f"_t{i:04d}_{k.replace('.', '_')}": v for i, (k, v) in enumerate(donor.state_dict().items())
    }
    renamed = {(k if "classifier" not in k else "_fc" + k): v for k, v in renamed.items()}
    torch.save(renamed, tmp_path / "w.pth")
    model = create("test_efficientnet", tmp_path / "w.pth")
    assert torch.equal(model.conv_stem.weight, donor.conv_stem.weight)
    assert model.get_classifier().out_features == 2
    frozen = create("test_efficientnet", tmp_path / "w.pth", freeze_backbone=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}


def test_augmentations_keep_size_and_change_pixels() -> None:
    from aiscan.train.augment import report_augmentations

    torch.manual_seed(0)
    img = torch.from_numpy(np.array(Image.new("RGB", (64, 64), (120, 80, 40)))).permute(2, 0, 1)
    img[:, :, :32] = 200
    for p in (0.0, 1.0):
        out = report_augmentations(anti_shortcut=p)(img)
        assert out.shape == img.shape and out.dtype == torch.uint8
    outs = [report_augmentations(anti_shortcut=1.0)(img) for _ in range(4)]
    assert any(not torch.equal(o, img) for o in outs)
