"""The kind of picture each training source holds, for false-alarm rates per kind.

A moderation queue feels a detector through the real images it flags, and those differ
by kind: paintings and manga are flagged far more than camera photos. The training
manifests name sources, not kinds, so this table gives each (label, source) of
train-v1 to train-v4 one kind (by the data READMEs' descriptions), and where a source
mixes kinds in named folders (train-v4's groups, PACS's domains, PeopleArt's photos),
each (label, source, group) its own:

- ``photo``: camera photos of scenes and objects;
- ``face``: photos (or photoreal renders) whose subject is a face or a portrait;
- ``art``: paintings, drawings, sketches, stylised renders;
- ``illustration``: anime, manga, comics, cartoons and digital illustration;
- ``document``: scans, receipts, memes, infographics, screenshots;
- ``mixed``: sources that mix the above with no per-image label.

A source missing from the table is "unknown" (say so in a report rather than guess).
"""

from __future__ import annotations

CATEGORIES = ("photo", "face", "art", "illustration", "document", "mixed", "unknown")

#: Kinds of the real images: what a band promise is held to, kind by kind.
REAL_KINDS = ("photo", "face", "art", "illustration", "document")

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


#: train-v4 (real only): the kind is the group folder.
_V4_SOURCES = (
    "agh-books", "apisr-lr", "cugan-demos", "frenzy-walls", "bob-ross", "jojogan-style",
    "opencomic-pc", "kumiko-tests", "opencv-course", "human-samples", "faceapi",
    "codeformer-inputs", "u2net-test", "deca-test", "beautygan", "compreface", "bop-test",
    "gfpgan-inputs", "gpen-inputs", "facenet-pt", "3ddfa-v2",
)  # fmt: skip
_V4_GROUPS = {
    "anime": "illustration",
    "comic": "illustration",
    "painting": "art",
    "portrait": "face",
    "photo": "photo",
}
#: (label, source, group) where a source's groups are kinds of their own.
_GROUPS: dict[tuple[str, str, str], str] = {
    ("real", "pacs", "cartoon"): "illustration",
    ("real", "pacs", "sketch"): "art",
    ("real", "pacs", "art_painting"): "art",
    ("real", "people-art", "photo"): "photo",
    **{("real", s, g): k for s in _V4_SOURCES for g, k in _V4_GROUPS.items()},
}


def category(label: str, source: str, group: str = "") -> str:
    """The kind of a (label, source[, group]), "unknown" when the table lacks it."""
    found = _GROUPS.get((label, source, group))
    return found or _TABLE.get((label, source), "unknown")
