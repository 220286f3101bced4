"""Training, metrics, splits, export from a run: CPU, generated data, seconds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

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


def _tiny_config(data: Path, out: Path, **overrides: object) -> Any:
    """A TrainConfig that trains timm's tiny test model on ``_dataset`` in seconds."""
    from aiscan.train.loop import TrainConfig

    settings: dict[str, object] = {
        "arch": "test_efficientnet",
        "epochs": 2,
        "batch_size": 8,
        "lr": 2e-3,
        "input_size": 32,
        "workers": 0,
        # timm's 2-class head starts with logits so large that this tiny model, in bf16 on
        # a CPU with AMX, does not learn within 2 epochs; the small head does, everywhere
        "head_init": "small",
    }
    settings.update(overrides)
    return TrainConfig(data_dirs=(str(data),), out_dir=str(out), **settings)


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
    from aiscan.scanner.core.infer import Classifier
    from aiscan.train.evaluate import evaluate
    from aiscan.train.loop import train

    data = _dataset(tmp_path / "data", per_class=40)
    cfg = _tiny_config(data, tmp_path / "run", seed=3)
    first = train(cfg)
    assert len(first.epochs) == 2
    other = dataclasses.replace(cfg, lr=1e-3)
    with pytest.raises(ValueError, match="other settings"):
        train(other)  # a run folder belongs to one configuration...
    longer = dataclasses.replace(cfg, epochs=3)
    assert len(train(longer).epochs) == 3  # ...but may be trained for more epochs
    with pytest.raises(ValueError, match="other settings"):
        train(cfg)  # and not for fewer
    losses = [e["train_loss"] for e in first.epochs]
    assert losses[-1] < losses[0]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    aucs = [e["val_auc"] for e in history["epochs"]]
    # best.pth is the first epoch of the best validation AUC (select="val_auc")
    assert history["best_epoch"] == aucs.index(max(aucs))
    info = export_run(tmp_path / "run", tmp_path / "run" / "model.onnx")
    assert info.extra["parity"]["max_abs_diff_p_ai"] < 1e-4
    assert info.extra["training"]["best_epoch"] == history["best_epoch"] + 1
    # no protocol summary given: the threshold is max F1 on the run's validation scores
    from aiscan.train.predict import score

    val = score(tmp_path / "run" / "model.onnx", load_split(tmp_path / "run" / "split.csv")["val"])
    assert info.extra["threshold_rule"] == "max F1 on validation"
    assert info.threshold == choose_threshold(val.is_ai[val.ok], val.p_ai[val.ok], None)
    assert info.extra["validation"]["n"] == int(val.ok.sum()) > 0
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
                data_dirs=(str(_dataset(tmp_path / "few", per_class=8)),),
                out_dir=str(tmp_path / "few-run"),
                arch="test_efficientnet",
            )
        )
    data = _dataset(tmp_path / "data", per_class=16)
    cfg = TrainConfig(
        data_dirs=(str(data),),
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


def _sources(counts: dict[tuple[int, str], int]) -> list[Sample]:
    return [
        Sample(f"/d/{LABELS[lab]}/{src}/{i}.jpg", lab, src)
        for (lab, src), n in counts.items()
        for i in range(n)
    ]


def test_source_folds_keep_each_source_whole_and_balance_both_classes() -> None:
    from aiscan.train.data import holdout_split, source_folds

    counts = {(0, f"gen{i}"): 50 + 30 * i for i in range(6)}
    counts |= {(1, f"photo{i}"): 40 + 25 * i for i in range(6)}
    counts[(1, "gen0")] = 60  # a source with both classes
    samples = _sources(counts)
    folds = source_folds(samples, 3)
    assert set(folds) == {s.source for s in samples} and set(folds.values()) == {0, 1, 2}
    assert source_folds(list(reversed(samples)), 3) == folds  # order does not matter
    for f in range(3):
        held = [s for s in samples if folds[s.source] == f]
        assert {s.label for s in held} == {0, 1}  # every fold can be scored (both classes)
    split = holdout_split(samples, "2/3", seed=1)
    test_sources = {s.source for s in split["test"]}
    assert test_sources == {n for n, f in folds.items() if f == 1}
    for name in ("train", "val"):
        assert not {s.source for s in split[name]} & test_sources
    assert sum(len(v) for v in split.values()) == len(samples)
    with pytest.raises(ValueError, match="I/K"):
        holdout_split(samples, "2-3")
    with pytest.raises(ValueError, match="1 <= I <= K"):
        holdout_split(samples, "4/3")


def test_source_balanced_weights_give_each_class_half() -> None:
    from aiscan.train.loop import source_balanced_weights

    samples = _sources({(0, "big"): 400, (0, "small"): 100, (1, "r"): 50})
    w = np.array(source_balanced_weights(samples))
    ai = np.array([s.is_ai for s in samples])
    assert w[ai].sum() == pytest.approx(w[~ai].sum())
    big, small = w[0], w[400]
    assert big * 400 / (small * 100) == pytest.approx(2.0)  # sqrt(400) / sqrt(100)


def test_random_regions_have_the_policy_aspect_and_stay_inside() -> None:
    import random

    from aiscan.model.preprocessing import Preprocessing
    from aiscan.train.augment import RandomRegion

    random.seed(0)
    crop, squash = Preprocessing(resize="crop"), Preprocessing()
    region = RandomRegion(0.5)
    sides = []
    for size in [(256, 171), (171, 256), (256, 256), (300, 40)]:
        for _ in range(50):
            left, top, right, bottom = region(size, crop)
            assert 0 <= left < right <= size[0] and 0 <= top < bottom <= size[1]
            assert right - left == pytest.approx(bottom - top)
            sides.append((right - left) / min(size))
        assert region(size, squash) == (0.0, 0.0, float(size[0]), float(size[1]))
    assert 0.5 <= min(sides) < 0.6 and max(sides) > 0.95
    with pytest.raises(ValueError):
        RandomRegion(0.0)


def test_torchvision_efficientnet_b0_maps_onto_timm_by_order(tmp_path: Path) -> None:
    """The B0 init (a torchvision state dict with a 1-output head) gives timm's
    efficientnet_b0 the same features, tensor for tensor."""
    torchvision = pytest.importorskip("torchvision")
    from aiscan.train.model import create

    torch.manual_seed(0)
    donor = torchvision.models.efficientnet_b0()
    donor.classifier[1] = torch.nn.Linear(1280, 1)
    for m in donor.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(donor.state_dict(), tmp_path / "b0.pth")
    model = create("efficientnet_b0", tmp_path / "b0.pth").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want = torch.flatten(donor.eval().avgpool(donor.features(x)), 1)
        got = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_small_head_init_and_body_learning_rate() -> None:
    from aiscan.train.loop import TrainConfig, _optimizer
    from aiscan.train.model import create

    model = create("test_efficientnet", head_init="small")
    head = model.get_classifier()
    assert float(head.weight.detach().std()) < 0.02
    assert float(head.bias.detach().abs().max()) == 0.0
    cfg = TrainConfig(data_dirs=("x",), out_dir="y", lr=1e-3, body_lr_scale=0.1)
    groups = _optimizer(model, cfg).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="head_init"):
        create("test_efficientnet", head_init="zero")


def test_degrade_augmentation_blurs_and_reencodes() -> None:
    from aiscan.train.augment import report_augmentations

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    out = report_augmentations(degrade=1.0)(img)
    assert out.shape == img.shape and out.dtype == torch.uint8

    # blur and JPEG both remove high frequencies: neighbouring pixels become closer
    def roughness(t: torch.Tensor) -> float:
        return float((t[:, :, 1:].float() - t[:, :, :-1].float()).abs().mean())

    assert roughness(out) < roughness(img)


@pytest.mark.slow
def test_fold_runs_score_held_out_sources_and_pool(tmp_path: Path) -> None:
    from aiscan.train.loop import train
    from aiscan.train.protocol_cli import main

    data = _dataset(tmp_path / "data", per_class=24)
    runs = []
    for i in (1, 2):
        cfg = _tiny_config(data, tmp_path / f"fold{i}", resize="crop", fold=f"{i}/2")
        history = train(cfg)
        assert all("holdout_auc" in e for e in history.epochs)
        runs.append(str(tmp_path / f"fold{i}"))
        held = load_split(tmp_path / f"fold{i}" / "split.csv")["test"]
        assert len({s.source for s in held}) == 1  # s1 or s2, both classes
    out = tmp_path / "protocol.json"
    assert main(["folds", *runs, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["epochs"]) == {"1", "2"}
    last = report["epochs"]["2"]
    assert last["images"] == 24 * 2 and last["sources"] == 4
    assert set(last["per_source"]) == {"ai/s1", "ai/s2", "real/s1", "real/s2"}
    assert main(["folds", runs[0], runs[0]]) == 2  # overlapping held-out sets are refused
    # export fold 1 with the recipe's out-of-source summary and threshold in its metadata
    from aiscan.export.cli import main as export_main
    from aiscan.scanner.core.infer import Classifier

    model = tmp_path / "fold1.onnx"
    args = ["--run", runs[0], "--out", str(model), "--protocol", f"{out}:2"]
    assert export_main([*args, "--threshold-from", "protocol"]) == 0
    info = Classifier(model, "cpu").info
    assert info.preprocessing.resize == "crop"
    assert info.threshold == pytest.approx(last["best_balanced_threshold"])
    assert info.extra["generalisation"]["epoch"] == 2
    assert info.extra["generalisation"]["mean_fold_auc"] == pytest.approx(last["mean_fold_auc"])
    assert "per_source" not in info.extra["generalisation"]
    assert export_main([*args[:-1], f"{out}:9"]) == 2  # no such epoch: one clear error
    # an ensemble of two recipes (here one recipe's two epochs) on the same folds
    ens = tmp_path / "ensemble.json"
    assert main(["ensemble", f"{tmp_path}:2", f"{tmp_path}:1", "--out", str(ens)]) == 0
    report = json.loads(ens.read_text())
    assert [m["epoch"] for m in report["members"]] == [2, 1]
    assert report["summary"]["images"] == 24 * 2
    assert report["members"][0]["summary"]["pooled_auc"] == pytest.approx(last["pooled_auc"])
    assert main(["ensemble", f"{tmp_path}:2", f"{tmp_path}:7"]) == 2  # no such epoch
    assert main(["ensemble", f"{tmp_path}:2"]) == 2  # one member is no ensemble
    args = ["--run", runs[0], "--out", str(model), "--protocol", str(ens)]
    assert export_main([*args, "--threshold-from", "protocol"]) == 0
    info = Classifier(model, "cpu").info
    assert info.threshold == pytest.approx(report["summary"]["best_balanced_threshold"])


@pytest.mark.parametrize("decode", ["draft", "full"])
@pytest.mark.parametrize("resize", ["squash", "crop"])
def test_training_tensor_equals_the_scanners_bit_for_bit(
    tmp_path: Path, resize: str, decode: str
) -> None:
    """What evaluation in training feeds the model is what the CPU scanner feeds it, with
    each decode mode the definition allows (the scanner follows the definition's)."""
    from aiscan.model.pixels import normalize_batch
    from aiscan.model.preprocessing import Preprocessing
    from aiscan.scanner.core.decode import CpuDecoder
    from aiscan.scanner.core.discovery import Found
    from aiscan.train.data import ImageDataset, make_collate
    from tests.conftest import jpeg_bytes, photo

    spec = Preprocessing(input_size=(64, 64), resize=resize, decode=decode)
    paths = []
    for i, size in enumerate([(640, 480), (300, 500), (96, 96)]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(photo(*size, seed=i)))
        paths.append(str(path))
    samples = [Sample(p, 0, "s") for p in paths]
    dataset = ImageDataset(samples, spec)
    train_batch, _ = make_collate(spec)([dataset[i] for i in range(len(samples))])
    decoder = CpuDecoder(spec)
    items = [decoder(Found(p)) for p in paths]
    scan_batch = normalize_batch([it.pixels for it in items], spec)
    np.testing.assert_array_equal(train_batch.numpy(), scan_batch)


def test_ensemble_of_two_runs_is_one_model_giving_the_mean_p_ai(tmp_path: Path) -> None:
    """Two runs of one split, with different input normalisations, exported as one model:
    its p_ai is the mean of the members' own exports, its weights stored in float16 fit
    half the file, and runs of another split are refused."""
    from aiscan.export.cli import main as export_main
    from aiscan.export.ensemble import export_ensemble
    from aiscan.export.from_run import export_run
    from aiscan.model.pixels import load_pixels, normalize_batch
    from aiscan.scanner.core.infer import Classifier
    from aiscan.train.evaluate import evaluate
    from aiscan.train.loop import train

    data = _dataset(tmp_path / "data", per_class=24)
    base = _tiny_config(data, tmp_path, epochs=1, resize="crop")
    runs = []
    for name, norm in (("a", "half"), ("b", "imagenet")):
        train(dataclasses.replace(base, out_dir=str(tmp_path / name), norm=norm))
        export_run(tmp_path / name, tmp_path / name / "model.onnx")
        runs.append(tmp_path / name)
    out = tmp_path / "ens" / "model.onnx"
    info = export_ensemble(runs, out, fp16_weights=False)
    assert info.output == "probabilities" and info.arch == "test_efficientnet+test_efficientnet"
    assert info.extra["parity"]["max_abs_diff_p_ai"] < 1e-5
    assert len(info.extra["training"]["members"]) == 2
    test = load_split(tmp_path / "a" / "split.csv")["test"]
    members = [Classifier(r / "model.onnx", "cpu") for r in runs]
    ens = Classifier(out, "cpu")
    expect = np.mean(
        [
            m.predict(
                normalize_batch(
                    [load_pixels(s.path, m.info.preprocessing).pixels for s in test],
                    m.info.preprocessing,
                )
            )
            for m in members
        ],
        axis=0,
    )
    spec = ens.info.preprocessing
    got = ens.predict(normalize_batch([load_pixels(s.path, spec).pixels for s in test], spec))
    np.testing.assert_allclose(got, expect, atol=1e-5)
    # the folder is a run for aiscan-eval: the members' split, the ensemble's model
    assert evaluate(tmp_path / "ens")["metrics"]["n"] == len(test)
    # float16 storage: fp32 arithmetic on rounded weights, a smaller file
    half = tmp_path / "half" / "model.onnx"
    assert (
        export_main(["--ensemble", *map(str, runs), "--out", str(half), "--variants", "fp16"]) == 0
    )
    fp32 = half.with_name("model.fp32.onnx")
    assert Classifier(half.with_name("model.fp16.onnx"), "cpu").info.extra["precision"] == "fp16"
    assert half.stat().st_size < 0.6 * fp32.stat().st_size
    assert Classifier(half, "cpu").info.extra["weight_storage"] == "float16"
    assert "weight_storage" not in Classifier(fp32, "cpu").info.extra
    # ONNX Runtime folds every weight cast when the session loads: fp32 arithmetic, no
    # per-batch conversion
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(half), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimised.onnx")).graph
    assert not [n for n in graph.node if any(i.endswith("__fp16") for i in n.input)]
    assert any(t.name.endswith("__fp16") for t in onnx.load(str(half)).graph.initializer)
    assert Classifier(half, "cpu").info.extra["parity"]["max_abs_diff_p_ai"] < 1e-2
    # another split (other seed): the ensemble's test images would be seen by a member
    train(dataclasses.replace(base, out_dir=str(tmp_path / "c"), seed=1))
    with pytest.raises(ValueError, match="split the data differently"):
        export_ensemble([runs[0], tmp_path / "c"], tmp_path / "bad" / "model.onnx")
    assert export_main(["--ensemble", str(runs[0]), str(tmp_path / "c"), "--out", str(half)]) == 2


def test_train_cli_defaults_are_the_configs() -> None:
    """Each aiscan-train option's default is TrainConfig's own, declared once."""
    from aiscan.train.cli import _config, build_parser
    from aiscan.train.loop import TrainConfig

    args = build_parser().parse_args(["data", "--out", "run"])
    assert _config(args) == TrainConfig(data_dirs=("data",), out_dir="run")
    args = build_parser().parse_args(
        ["d1", "d2", "--out", "r", "--epochs", "2", "--degrade", "0.5"]
    )
    cfg = _config(args)
    assert (cfg.data_dirs, cfg.epochs, cfg.degrade) == (("d1", "d2"), 2, 0.5)
    assert set(TrainConfig.CHOICES) <= set(vars(args))
    args = build_parser().parse_args(["d", "--out", "r", "--decode", "full"])
    assert _config(args).spec().decode == "full"  # written into the exported model
