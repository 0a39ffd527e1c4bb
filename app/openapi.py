"""Export the OpenAPI document: ``python -m app.openapi > openapi/openapi.json``.

``tests/app/test_openapi.py`` regenerates it and fails when the committed file drifts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from app.settings import Settings


def build_spec() -> dict[str, Any]:
    from app.main import create_app

    spec: dict[str, Any] = create_app(Settings()).openapi()
    return spec


def render() -> str:
    return json.dumps(build_spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
