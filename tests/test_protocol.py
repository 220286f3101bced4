"""The generalisation summary: per-source AUC against the other class, pooled figures."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from aiscan.train.data import Sample
from aiscan.train.protocol import (
    Scored,
    balanced_accuracy,
    best_balanced_threshold,
    probe,
    summarize,
)


def _scored(groups: dict[tuple[int, str], list[float]]) -> Scored:
    samples, scores, folds = [], [], []
    for f, ((label, source), values) in enumerate(groups.items()):
        for i, v in enumerate(values):
            samples.append(Sample(f"/{source}/{label}/{i}.jpg", label, source))
            scores.append(v)
            folds.append(f % 2)
    return Scored(samples, np.array(scores), np.array(folds))


def test_each_source_is_scored_against_the_other_class_of_its_fold() -> None:
    # folds alternate: gan and photos in fold 0, diffusion and paintings in fold 1
    scored = _scored(
        {
            (0, "gan"): [0.9, 0.8, 0.7],
            (0, "diffusion"): [0.6, 0.2],
            (1, "photos"): [0.1, 0.3],
            (1, "paintings"): [0.5, 0.65],
        }
    )
    s = summarize(scored, threshold=0.5)
    src = s["per_source"]
    assert src["ai/gan"]["auc_vs_other_class"] == 1.0  # vs photos only
    assert src["real/photos"]["auc_vs_other_class"] == 1.0
    # diffusion vs paintings: of the 4 pairs only (0.6, 0.5) is ranked right
    assert src["ai/diffusion"]["auc_vs_other_class"] == pytest.approx(0.25)
    assert src["real/paintings"]["auc_vs_other_class"] == pytest.approx(0.25)
    assert src["real/paintings"]["accuracy"] == 0.0 and src["ai/diffusion"]["accuracy"] == 0.5
    assert s["worst_source_auc"] == pytest.approx(0.25)
    assert s["mean_source_auc"] == pytest.approx(np.mean([1.0, 0.25, 1.0, 0.25]))
    assert s["mean_fold_auc"] == pytest.approx(np.mean([1.0, 0.25]))
    assert s["sources"] == 4 and s["images"] == 9
    # pooled over both models: 0.9, 0.8, 0.7, 0.6 beat everything real but 0.65 ...
    assert s["pooled_auc"] == pytest.approx((3 * 4 + 3 + 1) / 20)
    square = np.array([True] * 3 + [False] * 2 + [True] * 2 + [False] * 2)
    assert summarize(scored, 0.5, square)["square_auc"] == 1.0  # gan vs photos only


def test_a_fold_with_one_class_falls_back_to_every_fold() -> None:
    scored = Scored(
        [Sample("/a/0.jpg", 0, "a"), Sample("/a/1.jpg", 0, "a"), Sample("/r/0.jpg", 1, "r")],
        np.array([0.9, 0.2, 0.5]),
        np.array([0, 0, 1]),
    )
    assert summarize(scored)["per_source"]["ai/a"]["auc_vs_other_class"] == 0.5


def test_best_balanced_threshold() -> None:
    is_ai = np.array([True, True, True, False, False, False])
    p = np.array([0.9, 0.4, 0.35, 0.3, 0.2, 0.1])
    assert balanced_accuracy(is_ai, p, 0.5) == pytest.approx((1 / 3 + 1) / 2)
    t = best_balanced_threshold(is_ai, p)
    assert 0.3 < t <= 0.35 and balanced_accuracy(is_ai, p, t) == 1.0


def test_probe_never_trains_on_the_source_it_scores() -> None:
    """A cue that only one source carries is invisible to the model that scores it, and
    a model that learnt it fails on the sibling source that lacks it."""
    rng = np.random.default_rng(0)
    samples, feats = [], []
    for label, source, shift in [(0, "a", 2.0), (0, "b", 2.0), (1, "c", -2.0), (1, "d", -2.0)]:
        for i in range(40):
            samples.append(Sample(f"/{source}/{i}.jpg", label, source))
            f = rng.normal(0, 1, 4)
            f[0] += shift  # a cue every source shares
            f[1] += 6.0 if source == "a" else 0.0  # a cue only source "a" has
            feats.append(f)
    feats_arr = np.array(feats)
    scored = probe(samples, feats_arr, groups="source")
    assert len(set(scored.fold.tolist())) == 4
    summary = summarize(scored)
    assert summary["per_source"]["ai/a"]["auc_vs_other_class"] > 0.9  # the shared cue helps
    # held out, "b" is judged by a model that learnt a's shortcut: the protocol shows it
    assert summary["worst_source"] == "ai/b"
    assert summary["per_source"]["ai/b"]["mean_p_ai"] < 0.5
    without_cue = feats_arr.copy()
    without_cue[:40, 1] -= 6.0
    again = probe(samples, without_cue, groups="source")
    # source "a" is scored by a model that never saw its cue: removing the cue from its
    # images moves their scores only through the little weight noise gave that feature
    assert np.abs(again.p_ai[:40] - scored.p_ai[:40]).mean() < 0.15
    grouped = probe(samples, feats_arr, groups="2")
    assert set(grouped.fold.tolist()) == {0, 1}


def test_an_ensembles_scores_are_the_mean_of_its_members_image_by_image() -> None:
    from aiscan.train.protocol import mean_of

    a = _scored({(0, "gan"): [0.9, 0.2], (1, "photos"): [0.4, 0.1]})
    # the same images in another order, scored by the same folds
    order = [3, 1, 0, 2]
    b = Scored([a.samples[i] for i in order], np.array([0.3, 0.6, 0.5, 0.0]), a.fold[order])
    both = mean_of([a, b])
    assert [s.path for s in both.samples] == [s.path for s in a.samples]
    assert both.p_ai == pytest.approx([0.7, 0.4, 0.2, 0.2])
    assert list(both.fold) == list(a.fold)
    moved = Scored(b.samples, b.p_ai, 1 - b.fold)  # an image held out by another fold
    with pytest.raises(ValueError, match="folds differ"):
        mean_of([a, moved])
    with pytest.raises(ValueError, match="different images"):
        mean_of([a, Scored(b.samples[:3], b.p_ai[:3], b.fold[:3])])


def _kind_scored(real: dict[tuple[str, str], list[float]], ai: list[float]) -> Scored:
    """Real images by (source, group), AI images of one source, one fold."""
    samples, scores = [], []
    for (source, group), values in real.items():
        for i, v in enumerate(values):
            samples.append(Sample(f"/r/{source}/{group}/{i}.jpg", 1, source, group))
            scores.append(v)
    for i, v in enumerate(ai):
        samples.append(Sample(f"/a/{i}.jpg", 0, "gen"))
        scores.append(v)
    return Scored(samples, np.array(scores), np.zeros(len(scores), int))


def test_the_band_edge_holds_the_worst_real_kind_to_twice_the_promise() -> None:
    from aiscan.train.protocol import MIN_KIND_IMAGES, band_edge

    rng = np.random.default_rng(0)
    photos = list(rng.uniform(0.0, 0.5, 400))  # photos score low
    anime = list(rng.uniform(0.3, 0.9, 100))  # real anime scores high: the worst kind
    scored = _kind_scored(
        {("opencv-course", "photo"): photos, ("agh-books", "anime"): anime},
        list(rng.uniform(0.5, 1.0, 300)),
    )
    edge = band_edge(scored, 0.05)
    real = ~scored.is_ai
    anime_sel = np.array([s.group == "anime" for s in scored.samples])
    pooled_fpr = (scored.p_ai[real] >= edge.pooled).mean()
    assert pooled_fpr <= 0.05
    assert (scored.p_ai[anime_sel] >= edge.pooled).mean() > 0.10  # the pooled edge fails it
    assert edge.binding == "illustration" and edge.threshold > edge.pooled
    assert (scored.p_ai[anime_sel] >= edge.threshold).mean() <= 0.10
    assert (scored.p_ai[real] >= edge.threshold).mean() <= 0.05
    # a kind with too few images to measure does not move the edge
    few = _kind_scored(
        {("opencv-course", "photo"): photos, ("agh-books", "anime"): anime[: MIN_KIND_IMAGES - 1]},
        list(rng.uniform(0.5, 1.0, 300)),
    )
    assert band_edge(few, 0.05).binding == ""
    with pytest.raises(ValueError):
        band_edge(scored, 1.5)


def test_kinds_come_from_the_group_where_a_source_mixes_kinds() -> None:
    from aiscan.train.categories import CATEGORIES, REAL_KINDS, category

    assert category("real", "frenzy-walls", "anime") == "illustration"
    assert category("real", "frenzy-walls", "photo") == "photo"
    assert category("real", "pacs", "cartoon") == "illustration"
    assert category("real", "pacs", "art_painting") == "art"
    assert category("real", "people-art", "photo") == "photo"
    assert category("real", "people-art", "artwork--Cubism") == "art"
    assert category("real", "imagenet-1k-ajs") == "photo"
    assert category("real", "no-such-source") == "unknown"
    assert set(REAL_KINDS) < set(CATEGORIES)


def test_the_operating_point_reports_kinds_and_sources() -> None:
    from aiscan.train.protocol import operating_point

    scored = _kind_scored(
        {("opencv-course", "portrait"): [0.1, 0.9], ("agh-books", "anime"): [0.95, 0.99]},
        [0.2, 0.97],
    )
    pt = operating_point(scored, 0.5)
    assert pt["by_category"]["real/face"] == {"n": 2, "flagged": 0.5}
    assert pt["by_category"]["real/illustration"] == {"n": 2, "flagged": 1.0}
    assert pt["by_source"]["ai/gen"] == {"n": 2, "caught": 0.5}
    assert pt["fpr"] == 0.75 and pt["tpr"] == 0.5


def test_the_edge_set_without_a_fold_is_checked_on_that_fold() -> None:
    """Two folds of photos; fold 1's photos score higher than fold 0's: an edge set on
    fold 0 alone flags far more than the promise of fold 1, and the report says so."""
    from aiscan.train.protocol import edge_by_fold

    rng = np.random.default_rng(1)
    samples, scores, folds = [], [], []
    for f, (low, high) in enumerate(((0.0, 0.4), (0.3, 0.7))):
        for i in range(200):
            source = ("imagenet-1k-ajs", "bsds500")[f]  # both photo sources
            samples.append(Sample(f"/r{f}/{i}.jpg", 1, source))
            scores.append(rng.uniform(low, high))
            folds.append(f)
        for i in range(100):
            samples.append(Sample(f"/a{f}/{i}.jpg", 0, f"gen{f}"))
            scores.append(rng.uniform(0.6, 1.0))
            folds.append(f)
    report = edge_by_fold(Scored(samples, np.array(scores), np.array(folds)), 0.05)
    assert set(report["edges"]) == {"0", "1"}
    assert report["fpr"] > 0.2  # fold 1's photos above fold 0's edge
    assert report["by_kind"]["photo"]["n"] == 400 and report["worst_kind"] == "photo"
