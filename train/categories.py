"""The kind of picture each training source holds, for false-alarm rates per kind.

A moderation queue feels a detector through the real images it flags, and those differ
by kind: paintings and manga are flagged far more than camera photos. The training
manifests name sources, not kinds, so this table gives each (label, source) of
train-v1, train-v2 and train-v3 one category (by the data READMEs' descriptions):

- ``photo``: camera photos of scenes and objects;
- ``face``: photos (or photoreal renders) whose subject is a face or a portrait;
- ``art``: paintings, drawings, cartoons, sketches, stylised renders;
- ``document``: scans, receipts, memes, infographics, screenshots;
- ``mixed``: sources that mix the above with no per-image label.

A source missing from the table is "unknown" (say so in a report rather than guess).
"""

from __future__ import annotations

CATEGORIES = ("photo", "face", "art", "document", "mixed", "unknown")

_TABLE: dict[tuple[str, str], str] = {
    # train-v1
    ("ai", "sd-cheatsheet-tiles"): "art",
    ("ai", "sd-artists-to-study"): "art",
    ("ai", "horde-styles"): "mixed",
    ("ai", "gallery-songguo"): "mixed",
    ("ai", "cashbowman-aiart"): "mixed",
    ("real", "cashbowman-aiart"): "mixed",
    ("real", "caltech101"): "photo",
    ("real", "people-art"): "art",
    ("real", "monet-kaggle"): "art",
    ("real", "imagenet-1k-ajs"): "photo",
    ("real", "hymenoptera"): "photo",
    ("real", "bsds500"): "photo",
    ("real", "sice-zerodce"): "photo",
    ("real", "dpst-photos"): "photo",
    # train-v2
    ("ai", "stylegan-zoo-tiles"): "mixed",
    ("ai", "perception-gan-faces"): "face",
    ("real", "perception-gan-faces"): "face",
    ("ai", "stylegan3-perception"): "face",
    ("real", "stylegan3-perception"): "face",
    ("ai", "stylegan2-ffhq-seeds"): "face",
    ("ai", "cyclegan-monet2photo"): "photo",
    ("real", "cyclegan-monet2photo"): "art",
    ("ai", "sdfd-faces"): "face",
    ("ai", "sd14-portraits"): "face",
    ("ai", "sd2-samples"): "mixed",
    ("ai", "dalle2-preview"): "mixed",
    ("ai", "flux-xlabs-samples"): "mixed",
    ("ai", "sentry-samples"): "mixed",
    ("real", "ciplab-real-faces"): "face",
    ("real", "face-lib-test-photos"): "face",
    ("real", "people-photos"): "photo",
    ("real", "stargan2-celebahq-afhq"): "face",
    ("real", "kaggle-landscape-photos"): "photo",
    # train-v3
    ("ai", "t2i-cmp"): "mixed",
    ("ai", "sdnext-reference"): "mixed",
    ("ai", "rare-to-frequent"): "mixed",
    ("ai", "nanobananapro-prompts"): "document",
    ("ai", "yetter"): "mixed",
    ("ai", "comfy-example-workflows"): "mixed",
    ("ai", "dcsan-imagen"): "art",
    ("ai", "declan-wright-dataset"): "photo",
    ("real", "declan-wright-dataset"): "photo",
    ("real", "sroie-receipts"): "document",
    ("real", "immich-test-assets"): "photo",
    ("real", "pacs"): "art",
    ("real", "memegen"): "document",
    ("real", "cartridgeocr"): "photo",
    ("real", "exifr"): "photo",
    ("real", "opensfm"): "photo",
    ("real", "apdrawinggan"): "face",
    ("real", "photomaker"): "face",
}


def category(label: str, source: str) -> str:
    """The category of a (label, source) pair, "unknown" when the table lacks it."""
    return _TABLE.get((label, source), "unknown")
