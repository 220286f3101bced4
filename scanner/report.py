"""``aiscan report``: one self-contained HTML page a moderator can open offline.

From a verdict file of any format (streamed, so a million rows is fine) and its run
summary when it lies beside it: counts by status, verdict and evidence, and the run
summary; then, before anything else, the files where the metadata and the model
disagree (declared AI but scored real, or a claimed camera capture scored AI: the cases
a reviewer should see, and the data the next model should learn from); the p_ai
histogram with both edges of the band; the folders that hold most flagged images; the
two queues a moderator works, the flagged (``ai``) and the ``uncertain`` images, highest
p_ai first. Every gallery carries small embedded thumbnails, bounded in number and size,
so the page stays a few MB; each opens its file. No external scripts, styles,
fonts or images: a Content-Security-Policy in the page forbids them."""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
import os
import stat
import urllib.parse
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import ImageOps

from aiscan.model.files import write_atomic
from aiscan.model.meta import canonical_edge
from aiscan.model.pixels import DecodeLimits, check_limits, is_jpeg, open_image

from .core.rows import Row
from .output.formats import iter_rows
from .output.sidecars import sidecars

BINS = 20


@dataclass
class _Folder:
    files: int = 0
    flagged: int = 0
    declared: int = 0
    p_sum: float = 0.0
    scored: int = 0


@dataclass
class Tally:
    """What the report shows, gathered in one pass over the rows."""

    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    evidence: Counter[str] = field(default_factory=Counter)
    histogram: list[int] = field(default_factory=lambda: [0] * BINS)
    folders: dict[str, _Folder] = field(default_factory=lambda: defaultdict(_Folder))
    flagged: list[tuple[float, int, Row]] = field(default_factory=list)  # a min-heap
    uncertain: list[tuple[float, int, Row]] = field(default_factory=list)  # a min-heap
    disagreements: int = 0
    disagree: list[tuple[float, int, Row]] = field(default_factory=list)  # a min-heap
    errors: list[tuple[str, str]] = field(default_factory=list)  # the first ERRORS_SHOWN
    error_reasons: Counter[str] = field(default_factory=Counter)


#: Error rows the report lists by path (all are counted by reason).
ERRORS_SHOWN = 200


def error_reason(error: str) -> str:
    """An error message without its particulars (sizes, names, the decoder's own words),
    to count errors by kind: "truncated image data (...)" -> "truncated image data"."""
    head = error.split(" (", 1)[0].split(": ", 1)[0]
    return " ".join(w for w in head.split() if not any(c.isdigit() for c in w))[:80] or "-"


#: Evidence that claims a capture, not a generation: a model verdict of AI contradicts it.
CAPTURE_CLAIMS = ("camera-claimed", "c2pa-signed")


def disagreement(row: Row, threshold: float) -> str | None:
    """Why the row's metadata and the model's score disagree, or None where they do not.

    The model's side is its score against the threshold, not the verdict column (which
    ``--evidence-policy override`` may have set from the evidence).
    """
    if row.p_ai is None:
        return None
    if row.evidence == "ai-declared" and row.p_ai < threshold:
        return "declared AI, scored real"
    if row.evidence in CAPTURE_CLAIMS and row.p_ai >= threshold:
        return f"{row.evidence}, scored AI"
    return None


def _keep(heap: list[tuple[float, int, Row]], entry: tuple[float, int, Row], n: int) -> None:
    """Keep the ``n`` largest entries (by key, then earliest row) in a min-heap."""
    if len(heap) < n:
        heapq.heappush(heap, entry)
    elif n and entry[:2] > heap[0][:2]:
        heapq.heapreplace(heap, entry)


def tally(rows: Any, gallery: int, threshold: float = 0.5) -> Tally:
    """Count everything; keep the ``gallery`` flagged and uncertain rows with the highest
    p_ai and the ``gallery`` strongest disagreements (farthest from the threshold)."""
    t = Tally()
    for i, row in enumerate(rows):
        t.rows += 1
        t.statuses[row.status] += 1
        if row.verdict:
            t.verdicts[row.verdict] += 1
        t.evidence[row.evidence or "none"] += 1
        if row.status == "error":
            t.error_reasons[error_reason(row.error)] += 1
            if len(t.errors) < ERRORS_SHOWN:
                t.errors.append((row.path, row.error))
        folder = t.folders[os.path.dirname(row.path) or "."]
        folder.files += 1
        folder.declared += row.evidence == "ai-declared"
        if row.p_ai is not None:
            t.histogram[min(BINS - 1, int(row.p_ai * BINS))] += 1
            folder.p_sum += row.p_ai
            folder.scored += 1
        if row.verdict == "ai":
            folder.flagged += 1
            _keep(t.flagged, (row.p_ai if row.p_ai is not None else 1.0, -i, row), gallery)
        elif row.verdict == "uncertain":
            _keep(t.uncertain, (row.p_ai if row.p_ai is not None else 0.5, -i, row), gallery)
        if row.p_ai is not None and disagreement(row, threshold):
            t.disagreements += 1
            _keep(t.disagree, (abs(row.p_ai - threshold), -i, row), gallery)
    return t


def thumbnail(path: str, size: int, limits: DecodeLimits | None = None) -> str | None:
    """A JPEG data URI of at most ``size`` pixels a side, or None (the gallery shows a
    placeholder) if the file is gone, is no longer a regular file, is over the scan's
    limits, or fails to decode. The file is opened without blocking and checked as opened
    (a FIFO or a device put where an image was never stalls the report) and read whole
    within the file size limit, never streamed from the path."""
    limits = limits or DecodeLimits()
    try:
        data = _regular_file_bytes(path, limits.max_file_bytes)
        if data is None:
            return None
        with open_image(data) as img:
            check_limits(img, limits)
            if is_jpeg(img):
                img.draft("RGB", (size, size))
            img.thumbnail((size, size))
            small = ImageOps.exif_transpose(img).convert("RGB")
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=70)
    except Exception:  # moved, deleted, or one of the files that had an error row
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _regular_file_bytes(path: str, max_bytes: int) -> bytes | None:
    """The bytes of ``path`` if, as opened, it is a regular file of at most ``max_bytes``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(max_bytes + 1)[:max_bytes]
    finally:
        os.close(fd)


def _edge(summary: dict[str, Any], key: str, default: float) -> float:
    """An edge of the run's band from its summary, in canonical form; ``default`` where
    the summary has none that is a probability (a hand-edited or foreign summary never
    breaks the report)."""
    try:
        value = float(summary.get(key, default))
    except (TypeError, ValueError):
        return default
    return canonical_edge(value) if 0.0 <= value <= 1.0 else default


def _edges(summary: dict[str, Any]) -> tuple[float, float]:
    """(ai edge, real edge) of the run: the real edge is the ai edge when there is no
    band (two verdicts)."""
    threshold = _edge(summary, "threshold", 0.5)
    return threshold, min(_edge(summary, "real_below", threshold), threshold)


def _summary(verdicts: Path) -> dict[str, Any]:
    path = sidecars(verdicts).summary
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def write_report(
    verdicts: str | Path, out: str | Path, *, gallery: int = 200, thumb_px: int = 160
) -> dict[str, Any]:
    """Write the HTML report; return its headline numbers."""
    verdicts, out = Path(verdicts), Path(out)
    summary = _summary(verdicts)
    threshold, real_below = _edges(summary)
    t = tally(iter_rows(verdicts), gallery, threshold)
    cards = [
        (row, thumbnail(row.path, thumb_px), "") for _, _, row in sorted(t.flagged, reverse=True)
    ]
    unsure = [
        (row, thumbnail(row.path, thumb_px), "") for _, _, row in sorted(t.uncertain, reverse=True)
    ]
    odd = [
        (row, thumbnail(row.path, thumb_px), disagreement(row, threshold) or "")
        for _, _, row in sorted(t.disagree, reverse=True)
    ]
    page = _page(verdicts, t, (threshold, real_below), summary, {"ai": cards, "odd": odd,
                 "uncertain": unsure})  # fmt: skip
    write_atomic(out, page)
    return {
        "rows": t.rows,
        "flagged": t.verdicts.get("ai", 0),
        "gallery": len(cards),
        "uncertain": len(unsure),
        "disagreements": t.disagreements,
        "bytes": out.stat().st_size,
    }


def _e(value: Any) -> str:
    """``value`` as HTML text: escaped, and valid UTF-8 (a file name's undecodable bytes
    shown as ``\\xNN``, as the verdict file writes them)."""
    text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return html.escape(text, quote=True)


def _table(title: str, counts: Counter[str]) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td class=n>{v}</td></tr>" for k, v in counts.most_common()
    )
    return f"<table><caption>{_e(title)}</caption>{rows or '<tr><td>-</td></tr>'}</table>"


def _histogram(t: Tally, threshold: float, real_below: float) -> str:
    """The p_ai histogram as inline SVG: bars coloured by verdict, the ai edge as a solid
    line and the real edge (where there is a band) as a dashed one."""
    w, h, peak = 600, 160, max(t.histogram) or 1
    bar = w / BINS

    def rect(i: int, n: int) -> str:
        middle = (i + 0.5) / BINS
        side = "ai" if middle >= threshold else ("real" if middle < real_below else "unsure")
        tall = n / peak * (h - 10)
        return (
            f'<rect x="{i * bar + 1:.1f}" y="{h - tall:.1f}" width="{bar - 2:.1f}" '
            f'height="{tall:.1f}" class="{side}">'
            f"<title>p_ai {i / BINS:.2f}-{(i + 1) / BINS:.2f}: {n}</title></rect>"
        )

    bars = "".join(rect(i, n) for i, n in enumerate(t.histogram))
    x = threshold * w
    marks = f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{h}" class="thr"/>'
    marks += f'<text x="{x + 4:.1f}" y="12">ai at {threshold:g}</text>'
    if real_below < threshold:
        r = real_below * w
        marks += f'<line x1="{r:.1f}" x2="{r:.1f}" y1="0" y2="{h}" class="real-edge"/>'
        marks += f'<text x="{r + 4:.1f}" y="26">real below {real_below:g}</text>'
    return (
        f'<svg viewBox="0 0 {w} {h + 16}" width="{w}" height="{h + 16}" role="img" '
        f'aria-label="p_ai histogram">{bars}{marks}'
        f'<text x="0" y="{h + 14}">0</text><text x="{w - 8}" y="{h + 14}">1</text></svg>'
    )


def _folders(t: Tally, limit: int = 50) -> str:
    ranked = sorted(t.folders.items(), key=lambda kv: (-kv[1].flagged, -kv[1].files, kv[0]))
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td class=n>{f.files}</td><td class=n>{f.flagged}</td>"
        f"<td class=n>{f.flagged / f.files:.1%}</td>"
        f"<td class=n>{f'{f.p_sum / f.scored:.3f}' if f.scored else '-'}</td>"
        f"<td class=n>{f.declared}</td></tr>"
        for name, f in ranked[:limit]
    )
    more = f"<p>{len(ranked) - limit} more folders not shown.</p>" if len(ranked) > limit else ""
    return (
        "<table id=folders><caption>Folders by flagged images</caption><tr><th>folder</th>"
        "<th>files</th><th>flagged</th><th>share</th><th>mean p_ai</th>"
        f"<th>AI declared</th></tr>{rows}</table>{more}"
    )


def _errors(t: Tally) -> str:
    """The files that could not be classified: counts by reason, then path by path."""
    total = t.statuses.get("error", 0)
    if not total:
        return "<p>None: every file was classified or skipped.</p>"
    rows = "".join(f"<tr><td>{_e(path)}</td><td>{_e(error)}</td></tr>" for path, error in t.errors)
    more = total - len(t.errors)
    tail = f"<p>{more} more error rows in the verdict file (status error).</p>" if more else ""
    return (
        _table("Error rows by reason", t.error_reasons)
        + f"<table id=errors><caption>Error rows ({total}; kept out of the p_ai figures)"
        f"</caption><tr><th>file</th><th>reason</th></tr>{rows}</table>{tail}"
    )


Card = tuple[Row, str | None, str]  # the row, its thumbnail (data URI), a note


def _file_uri(path: str) -> str:
    """A file:// link to ``path`` (its exact bytes, percent-encoded)."""
    return "file://" + urllib.parse.quote(os.fsencode(os.path.abspath(path)))


def _breakable(path: str) -> str:
    """``path`` as HTML that wraps after a separator, not in the middle of a name."""
    return "/<wbr>".join(_e(part) for part in path.split("/"))


def _cards(cards: list[Card]) -> str:
    out = []
    for row, uri, note in cards:
        img = f'<img src="{uri}" alt="">' if uri else '<div class="missing">not readable</div>'
        ev = "" if row.evidence in ("", "none") else f"<div class=ev>{_e(row.evidence)}</div>"
        gen = f"<div class=gen>{_e(row.generator_hint)}</div>" if row.generator_hint else ""
        p = f"{row.p_ai:.3f}" if row.p_ai is not None else "-"
        why = f"<div class=why>{_e(note)}</div>" if note else ""
        out.append(
            f'<figure class=card data-path="{_e(row.path)}" data-p="{p}" '
            f'title="{_e(row.evidence_detail)}"><a href="{_e(_file_uri(row.path))}" '
            f'target="_blank" rel="noopener">{img}</a><figcaption><b>{p}</b>{why}{ev}{gen}'
            f"<div class=path>{_breakable(row.path)}</div></figcaption></figure>"
        )
    return "".join(out)


def _disagree_intro(t: Tally, odd: list[Card], threshold: float) -> str:
    if not t.disagreements:
        return (
            "None: no file declared as AI scored below the threshold, and no claimed camera "
            "or signed capture scored above it."
        )
    return (
        f"{t.disagreements} files where the metadata and the model disagree (declared AI "
        f"with p_ai under {threshold:g}, or a claimed camera or signed C2PA capture at or "
        f"above it); the {len(odd)} farthest from the threshold first. Review these first: "
        "either the metadata lies or the model is wrong, and both are worth knowing."
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0 1.5em 1em 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.n{text-align:right}
caption{font-weight:bold;text-align:left}
svg rect.ai{fill:#c0392b}svg rect.real{fill:#2980b9}svg rect.unsure{fill:#f39c12}
svg .thr{stroke:#000;stroke-width:2}svg .real-edge{stroke:#000;stroke-dasharray:4}
svg text{font-size:11px}
#gallery,#disagree,#uncertain{display:flex;flex-wrap:wrap;gap:8px}
.card{width:176px;margin:0;border:1px solid #ddd;padding:4px;font-size:12px}
.card img{max-width:168px;max-height:168px;display:block;margin:auto}
.missing{height:80px;background:#eee;text-align:center;line-height:80px;color:#888}
.path{overflow-wrap:anywhere;color:#555}.ev{color:#8e44ad}.gen{color:#16a085}
.why{color:#c0392b;font-weight:bold}
"""

# Inline, no network: filter the gallery by path and say how many cards show.
_SCRIPT = """
(function(){
  var cards = Array.prototype.slice.call(
    document.querySelectorAll('#gallery .card, #uncertain .card'));
  var shown = document.getElementById('shown');
  function apply(){
    var q = document.getElementById('filter').value.toLowerCase(), n = 0;
    cards.forEach(function(c){
      var ok = c.getAttribute('data-path').toLowerCase().indexOf(q) >= 0;
      c.style.display = ok ? '' : 'none'; n += ok ? 1 : 0;
    });
    shown.textContent = n + ' of ' + cards.length + ' shown';
  }
  document.getElementById('filter').addEventListener('input', apply);
  apply();
  document.body.setAttribute('data-ready', String(cards.length));
})();
"""


def _page(
    verdicts: Path,
    t: Tally,
    edges: tuple[float, float],
    summary: dict[str, Any],
    galleries: dict[str, list[Card]],
) -> str:
    threshold, real_below = edges
    run = ""
    if summary:
        keys = (
            "model_id",
            "model_sha256",
            "threshold",
            "real_below",
            "providers",
            "decoder",
            "images_per_s",
            "elapsed_s",
            "started",
            "finished",
        )
        shown = dict(summary, threshold=f"{threshold:g}", real_below=f"{real_below:g}")
        run = "".join(f"<tr><td>{_e(k)}</td><td>{_e(shown.get(k, ''))}</td></tr>" for k in keys)
        run = f"<table><caption>Run</caption>{run}</table>"
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    flagged, unsure = t.verdicts.get("ai", 0), t.verdicts.get("uncertain", 0)
    cards, odd, maybe = galleries["ai"], galleries["odd"], galleries["uncertain"]
    band = f", uncertain from {real_below:g}" if real_below < threshold else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>aiscan report: {_e(verdicts.name)}</title><style>{_STYLE}</style></head>
<body>
<h1>aiscan report</h1>
<p>{_e(verdicts)}: {t.rows} files, {flagged} flagged as AI (p_ai at or above {threshold:g}{band}),
{unsure} uncertain. Made {made}. Evidence columns report what file metadata claims;
metadata is easily stripped or forged (see the aiscan README). Each image opens its file.</p>
{_table("Status", t.statuses)}{_table("Verdict", t.verdicts)}{_table("Evidence", t.evidence)}
{run}
<h2>Evidence and model disagree</h2>
<p>{_disagree_intro(t, odd, threshold)}</p>
<div id=disagree>{_cards(odd)}</div>
<h2>p_ai</h2>{_histogram(t, threshold, real_below)}
<h2>Folders</h2>{_folders(t)}
<h2>Files that could not be classified</h2>{_errors(t)}
<p><input id=filter placeholder="filter the two queues by path"> <span id=shown></span></p>
<h2>The ai queue: flagged images</h2>
<p>The {len(cards)} flagged images with the highest p_ai (of {flagged}).</p>
<div id=gallery>{_cards(cards)}</div>
<h2>The uncertain queue</h2>
<p>{_uncertain_intro(len(maybe), unsure, threshold, real_below)}</p>
<div id=uncertain>{_cards(maybe)}</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def _uncertain_intro(shown: int, total: int, threshold: float, real_below: float) -> str:
    if real_below >= threshold:
        return "None: this model has no band (two verdicts only)."
    if not total:
        return f"None: no file scored within [{real_below:g}, {threshold:g})."
    return (
        f"The {shown} uncertain images with the highest p_ai (of {total}, p_ai within "
        f"[{real_below:g}, {threshold:g})): the model neither clears nor flags them; "
        "a reviewer decides."
    )
