"""The README's example request stays a valid request."""

from __future__ import annotations

import json
from pathlib import Path

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.serving.schemas import encounter_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "encounter.json"


def test_example_file_is_the_documented_example_and_validates() -> None:
    payload = json.loads(EXAMPLE.read_text())
    assert payload == EXAMPLE_ENCOUNTER
    encounter_model().model_validate(payload)
