"""Export the OpenAPI document: ``python -m app.http.openapi > openapi/openapi.json``.

``tests/app/test_openapi.py`` regenerates it and fails when the committed file drifts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from app.http.app import build_http_app


def build_spec() -> dict[str, Any]:
    """The document of the API as ``create_app`` serves it (the lifespan adds no route)."""
    spec: dict[str, Any] = build_http_app().openapi()
    return spec


def render() -> str:
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
