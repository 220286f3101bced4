"""Heads on frozen CLIP features: fitted in seconds, judged on sources they never saw.

A head maps one image's features (:mod:`aiscan.train.features`) to p_ai. Two kinds:

- "linear": standardised features, a logistic regression (L2, inverse strength ``c``):
  UnivFD's linear probe;
- "mlp": standardised features, one hidden ReLU layer, trained with AdamW on a weighted
  cross entropy.

Which features (:func:`feature_matrix`): ``embeds`` (CLIP's projected 512-d embedding),
``cls:N[,M...]`` (the class token after transformer blocks N, M..., 0-based, concatenated:
RINE's intermediate blocks), ``cls:all``. Training rows come from the views named in
:attr:`HeadConfig.views` (augmentations of the same images); scores always from "base",
what the scanner feeds the model. Sample weights balance the classes and, with
``balance="source"``, the sources within each class, so that 3,831 PACS paintings weigh
no more than 50 camera photos.

:func:`out_of_source` is the protocol: one head per held-out source (or per fold), every
score from a head that never saw the image's source.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiscan.model.errors import UsageError
from aiscan.model.meta import LABELS

from .data import Sample
from .features import Features, parse_views
from .protocol import Scored, fold_of

HEAD_KINDS = ("linear", "mlp")
BALANCES = ("none", "class", "source")


def feature_blocks(name: str, blocks: int = 12) -> list[int] | None:
    """The blocks of a ``cls:...`` feature name (None for ``embeds``)."""
    if name == "embeds":
        return None
    kind, _, rest = name.partition(":")
    if kind != "cls" or not rest:
        raise UsageError(f"features must be 'embeds' or 'cls:N[,M...]' or 'cls:all', got {name!r}")
    if rest == "all":
        return list(range(blocks))
    try:
        picked = [int(v) for v in rest.split(",")]
    except ValueError as exc:
        raise UsageError(f"features {name!r}: block numbers must be integers") from exc
    if any(not 0 <= b < blocks for b in picked) or len(set(picked)) != len(picked):
        raise UsageError(f"features {name!r}: blocks must be distinct, within 0..{blocks - 1}")
    return picked


def feature_matrix(features: Features, name: str) -> np.ndarray:
    """The float32 matrix [samples, dims] that feature set ``name`` picks."""
    if name == "embeds":
        return features.arrays["image_embeds"]
    tokens = features.arrays["cls_tokens"]
    blocks = feature_blocks(name, tokens.shape[1])
    return tokens[:, blocks].reshape(len(tokens), -1)


@dataclass(frozen=True)
class HeadConfig:
    """How a head is fitted (every field is a lever the protocol measures).

    ``views`` name views of the scored features cache; ``also`` names other caches of
    the same images (another pixel regime, e.g. the files as they are beside their
    canonical copies) whose "base" view adds training rows, never scores
    (:func:`also_key`)."""

    head: str = "linear"
    features: str = "cls:11"
    c: float = 0.001
    hidden: int = 256
    epochs: int = 20
    weight_decay: float = 0.05
    balance: str = "source"
    views: tuple[str, ...] = ("base",)
    also: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise UsageError(f"head must be one of {HEAD_KINDS}, got {self.head!r}")
        if self.balance not in BALANCES:
            raise UsageError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        parse_views(",".join(self.views))  # each a known view
        if "base" not in self.views:
            raise UsageError("views must include 'base' (the scanner's input)")
        feature_blocks(self.features)
        if self.c <= 0 or self.hidden < 1 or self.epochs < 1:
            raise UsageError("c must be positive, hidden and epochs at least 1")


@dataclass
class Head:
    """A fitted head: ``logit = MLP((x - mean) / scale)``, ``p_ai = sigmoid(logit)``.

    Attributes:
        features: the feature set it reads (see :func:`feature_matrix`).
        mean, scale: the standardisation, per feature.
        layers: (weight [in, out], bias [out]) per layer, ReLU between layers; the last
            has one output, the AI logit.
    """

    features: str
    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def logit(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, np.float32) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        out: np.ndarray = h[:, 0]
        return out

    def p_ai(self, x: np.ndarray) -> np.ndarray:
        z = np.clip(self.logit(x), -60.0, 60.0)
        out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return out


def sample_weights(samples: Sequence[Sample], balance: str) -> np.ndarray:
    """Weights (mean 1): each class weighs the same; with "source", each source within
    its class too; "none": every image 1."""
    if balance not in BALANCES:
        raise UsageError(f"balance must be one of {BALANCES}, got {balance!r}")
    if balance == "none":
        return np.ones(len(samples))

    def key(s: Sample) -> tuple[int, str]:
        return (s.label, s.source if balance == "source" else "")

    count = Counter(key(s) for s in samples)
    groups_per_class = Counter(k[0] for k in count)
    w = np.array([1.0 / (count[key(s)] * groups_per_class[s.label]) for s in samples])
    return w / w.mean()


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0).astype(np.float32)
    scale = x.std(0).astype(np.float32)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def fit_head(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, config: HeadConfig, start: Head | None = None
) -> Head:
    """Fit one head on rows ``x`` (labels ``y``: True for AI; weights ``w``); a linear
    head may warm-start from ``start`` (another fit of the same features)."""
    mean, scale = _standardise(x)
    z = (x - mean) / scale
    if config.head == "linear":
        init = None
        if start is not None and start.features == config.features and len(start.layers) == 1:
            weight, bias = start.layers[0]
            init = np.r_[weight[:, 0], bias]
        return Head(config.features, mean, scale, [_fit_linear(z, y, w, config.c, init)])
    return Head(config.features, mean, scale, _fit_mlp(z, y, w, config))


def _fit_linear(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regression (scikit-learn, L-BFGS) on standardised rows; ``start``
    (weights then bias) warm-starts it: a fold differs from its neighbour by one source,
    so the held-out protocol converges in a fraction of the iterations."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000, warm_start=start is not None)
    if start is not None:
        clf.coef_, clf.intercept_ = (
            start[None, :-1].astype(np.float64),
            start[-1:].astype(np.float64),
        )
    clf.fit(z, y.astype(bool), sample_weight=w)
    return clf.coef_[0].astype(np.float32)[:, None], clf.intercept_.astype(np.float32)


def _fit_mlp(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, config: HeadConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    net = torch.nn.Sequential(
        torch.nn.Dropout(0.2),
        torch.nn.Linear(z.shape[1], config.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(config.hidden, 1),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=config.weight_decay)
    xt = torch.from_numpy(np.ascontiguousarray(z, np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    wt = torch.from_numpy(w.astype(np.float32))
    steps = config.epochs * max(1, len(xt) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xt), generator=gen)
        for first in range(0, len(order) - 255, 256):
            idx = order[first : first + 256]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(xt[idx])[:, 0], yt[idx], weight=wt[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    lin1, lin2 = net[1], net[4]
    assert isinstance(lin1, torch.nn.Linear) and isinstance(lin2, torch.nn.Linear)
    return [
        (lin1.weight.detach().numpy().T.copy(), lin1.bias.detach().numpy().copy()),
        (lin2.weight.detach().numpy().T.copy(), lin2.bias.detach().numpy().copy()),
    ]


def left_out_mask(samples: Sequence[Sample], left_out: Iterable[str]) -> np.ndarray:
    """True for the samples a head may train on: not of a source named in ``left_out``
    (``SOURCE`` for both classes of it, ``LABEL/SOURCE`` for one)."""
    names = set(left_out)
    return np.array(
        [s.source not in names and f"{LABELS[s.label]}/{s.source}" not in names for s in samples],
        dtype=bool,
    )


def also_key(cache: str) -> str:
    """The key under which another cache's "base" view joins the views of a fit."""
    return f"also:{cache}"


def load_views(
    cache: str | Path, samples: Sequence[Sample], config: HeadConfig
) -> dict[str, Features]:
    """The features a fit of ``config`` reads: the views it names from ``cache``, and the
    "base" view of each cache in ``config.also``.

    Raises:
        UsageError: a sample has no features, or an ``also`` cache holds features of
            another encoder graph (rows of two graphs would be mixed into one head).
    """
    from .features import features_precision, load_features

    precision = features_precision(cache)
    views = {v: load_features(Path(cache) / v, samples) for v in config.views}
    for other in config.also:
        held = features_precision(other)
        if held != precision:
            raise UsageError(f"{other} holds {held} features, {cache} {precision} ones")
        views[also_key(other)] = load_features(Path(other) / "base", samples)
    return views


def training_rows(
    samples: Sequence[Sample],
    views: Mapping[str, Features],
    config: HeadConfig,
    select: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and weights of the selected samples, one row per view they have."""
    chosen = np.ones(len(samples), bool) if select is None else select
    w_all = np.zeros(len(samples))
    idx = np.flatnonzero(chosen)
    w_all[idx] = sample_weights([samples[int(i)] for i in idx], config.balance)
    y_all = np.array([s.is_ai for s in samples])
    xs, ys, ws = [], [], []
    for view in (*config.views, *map(also_key, config.also)):
        feats = views[view]
        keep = chosen & feats.ok
        xs.append(feature_matrix(feats, config.features)[keep])
        ys.append(y_all[keep])
        ws.append(w_all[keep])
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def out_of_source(
    samples: Sequence[Sample],
    views: Mapping[str, Features],
    config: HeadConfig,
    groups: str = "source",
    trainable: np.ndarray | None = None,
) -> Scored:
    """Held-out p_ai of every base-view sample, each from a head fitted without its
    source ("source": one head per source) or its fold ("K": K source-grouped folds).
    ``trainable`` (default: all) marks the samples a head may be fitted on: the others
    are only scored (to measure what adding a data set brings, on the same images).
    Samples that failed to decode get NaN."""
    samples = list(samples)
    may_train = np.ones(len(samples), bool) if trainable is None else trainable
    fold = fold_of(samples, groups)
    base = views["base"]
    x_base = feature_matrix(base, config.features)
    p = np.full(len(samples), np.nan)
    start = None
    if config.head == "linear":  # every fold warm-starts from the fit on all rows
        start = fit_head(*training_rows(samples, views, config, may_train), config)
    for f in sorted(set(fold.tolist())):
        test = fold == f
        x, y, w = training_rows(samples, views, config, ~test & may_train)
        if y.all() or not y.any():
            raise UsageError(
                "a fold's training part holds one class only: the protocol needs sources "
                "of both classes outside every held-out source or fold"
            )
        head = fit_head(x, y, w, config, start)
        score = test & base.ok
        p[score] = head.p_ai(x_base[score])
    return Scored(samples, p, fold)
