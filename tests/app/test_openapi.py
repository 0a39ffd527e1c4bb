"""The committed OpenAPI document is the one the app generates."""

from __future__ import annotations

from pathlib import Path

from app.http.openapi import render

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_openapi_file_matches_the_app() -> None:
    assert SPEC.read_text() == render(), (
        "openapi/openapi.json is out of date: run `make openapi` and commit the result"
    )
