"""Each shipped model's card is the one its metadata makes: a card and its model never
disagree (regenerate with ``aiscan-export --card MODEL --out CARD``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiscan.export.card import card_of
from aiscan.scanner.core.models import SHIPPED_MODELS, shipped_model


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_the_shipped_models_card_is_its_metadatas(name: str) -> None:
    model = shipped_model(name)
    assert model is not None
    card = model.with_suffix(".md")
    assert card.is_file(), f"no card beside {model.name}: aiscan-export --card {model}"
    assert card.read_text(encoding="utf-8") == card_of(model), (
        f"{card.name} disagrees with {model.name}'s metadata: regenerate it with "
        f"aiscan-export --card {model} --out {card}"
    )


def test_a_card_says_what_the_model_carries(tmp_path: Path, tiny_model: Path) -> None:
    from aiscan.export.cli import main

    out = tmp_path / "card.md"
    assert main(["--card", str(tiny_model), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# tiny-test\n") and "untrained weights" in text
