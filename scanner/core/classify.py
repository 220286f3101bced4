"""The verdict policy, per batch: a model opened once (:class:`OpenModel`: session,
threshold, band, batch size), decoded items and probabilities into rows
(:class:`RowMaker`), and one batch through the model (:func:`classify_batch`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from aiscan.model.meta import ModelInfo, band_label, canonical_edge
from aiscan.model.meta import verdict as verdict_of
from aiscan.model.pixels import normalize_batch
from aiscan.model.preprocessing import Preprocessing

from .decode import Batch, Item
from .errors import ConfigError
from .infer import Classifier, default_batch_size, default_threads
from .models import resolve_model
from .rows import Row, as_verdict


class RowMaker:
    """Turns decoded items and probabilities into verdict rows.

    With the "override" evidence policy, a file whose metadata declares it AI-made
    (``evidence == "ai-declared"``) gets the verdict "ai" whatever its p_ai; p_ai itself
    is always the model's.
    """

    def __init__(
        self,
        model: str,
        threshold: float,
        evidence_policy: str = "report",
        real_below: float | None = None,
    ) -> None:
        self.model = model
        self.threshold = canonical_edge(threshold)
        below = self.threshold if real_below is None else canonical_edge(real_below)
        self.real_below = min(below, self.threshold)
        self.evidence_policy = evidence_policy
        self.override = evidence_policy == "override"
        #: what judged the rows, beside the model (:func:`aiscan.model.meta.band_label`)
        self.band = band_label(self.threshold, self.real_below, evidence_policy)

    def __call__(self, item: Item, p_ai: float | None = None, error: str = "") -> Row:
        status, err = item.status, item.error
        if status == "ok" and (error or p_ai is None or not math.isfinite(p_ai)):
            status, err = "error", error or f"model returned a non-finite score ({p_ai})"
            p_ai = None
        verdict = "" if p_ai is None else verdict_of(p_ai, self.threshold, self.real_below)
        if verdict and self.override and item.evidence.kind == "ai-declared":
            verdict = "ai"
        return Row(
            path=item.path,
            status=status,
            p_ai=p_ai if status == "ok" else None,
            verdict=as_verdict(verdict),
            error=err,
            format=item.format,
            width=item.width,
            height=item.height,
            bytes=item.bytes,
            sha256=item.sha256,
            model=self.model,
            band=self.band if verdict else "",
            evidence=item.evidence.kind,
            evidence_detail=item.evidence.detail,
            generator_hint=item.evidence.generator,
        )


def verdict_band(
    info: ModelInfo, threshold: float | None, real_below: float | None
) -> tuple[float, float]:
    """The (``ai`` edge, ``real`` edge) a scan judges with, as a whole, in canonical form
    (:func:`aiscan.model.meta.canonical_edge`): each edge given, else the model's own
    (no ``real`` edge: the ``ai`` edge, two verdicts).

    Raises:
        ConfigError: the ``real`` edge lies above the ``ai`` edge, whichever of the two
            came from the options and which from the model (the uncertain band would
            silently vanish).
    """
    above = canonical_edge(info.threshold if threshold is None else threshold)
    below_raw = info.real_below if real_below is None else real_below
    below = above if below_raw is None else canonical_edge(below_raw)
    if below > above:
        where_ai = "--threshold" if threshold is not None else "the model's ai edge"
        where_real = "--real-below" if real_below is not None else "the model's real edge"
        raise ConfigError(
            f"{where_real} {below:g} is above {where_ai} {above:g}: the uncertain band would "
            "vanish; give both edges, the real one at or below the ai one"
        )
    return above, below


def _host_tensor(items: list[Item], spec: Preprocessing) -> np.ndarray:
    """One input batch for items on the host: tensors a batch decoder made, or pixels
    normalised here."""
    pixels = [it.pixels for it in items if it.tensor is None and it.pixels is not None]
    if len(pixels) == len(items):
        return normalize_batch(pixels, spec)
    normed = iter(normalize_batch(pixels, spec)) if pixels else iter(())
    return np.stack([it.tensor if it.tensor is not None else next(normed) for it in items])


def classify_batch(batch: Batch, classifier: Classifier, make_row: RowMaker) -> list[Row]:
    """Run the model on every ready item of a batch; one row per item, in order."""
    items, on_device = batch.items, set(batch.on_device)
    host = [
        i
        for i, it in enumerate(items)
        if it.status == "ok"
        and i not in on_device
        and (it.tensor is not None or it.pixels is not None)
    ]
    scores: dict[int, float] = {
        i: it.reused_p_ai for i, it in enumerate(items) if it.reused_p_ai is not None
    }
    failure = ""
    try:
        if host:
            inputs = _host_tensor([items[i] for i in host], classifier.info.preprocessing)
            scores.update(zip(host, map(float, classifier.predict(inputs)), strict=True))
        if batch.on_device:
            probs = classifier.predict_device(batch.device)
            scores.update(zip(batch.on_device, map(float, probs), strict=True))
    except Exception as exc:  # the runtime's own errors: the batch's rows say so
        failure = f"inference failed: {type(exc).__name__}: {exc}"
    ready = set(host) | on_device | set(scores)
    rows = [
        make_row(it, scores.get(i), failure if i in ready else "") for i, it in enumerate(items)
    ]
    for it in items:
        it.pixels = it.tensor = None  # free the batch's memory as soon as it is written
    batch.device = None
    return rows


@dataclass(frozen=True)
class OpenModel:
    """A model opened once, for every engine and the API: its session, the threshold and
    band its verdicts use, its batch size and its row maker.

    Attributes:
        classifier: the ONNX Runtime session.
        threshold: p_ai at or above which the verdict is "ai".
        real_below: p_ai below which it is "real" (the threshold itself: no band).
        batch_size: images per inference call.
        rows: the row maker with this threshold, band and evidence policy.
    """

    classifier: Classifier
    threshold: float
    real_below: float
    batch_size: int
    rows: RowMaker

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str] | None,
        device: str = "auto",
        *,
        threads: int = 0,
        threshold: float | None = None,
        real_below: float | None = None,
        batch_size: int | None = None,
        evidence_policy: str = "report",
    ) -> OpenModel:
        """Open ``model`` (a path or a shipped model's name) on ``device``; ``threshold``,
        ``real_below`` and ``batch_size`` override the model's own and the device's.

        Raises:
            ConfigError, ModelError, DeviceError, EncoderUnavailableError.
        """
        classifier = Classifier(resolve_model(model), device, threads=threads or default_threads())
        above, band = verdict_band(classifier.info, threshold, real_below)
        size = batch_size or default_batch_size(classifier.report.providers[0])
        rows = RowMaker(classifier.model_label, above, evidence_policy, band)
        return cls(classifier, above, band, size, rows)
