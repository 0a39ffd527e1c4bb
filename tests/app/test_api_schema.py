"""The API against its own contract: schemathesis generates requests from ``openapi/openapi.json``
(valid and invalid ones) and checks every answer of the running app with a valid admin key.

Pass criterion: no 5xx, every status code documented for its route, every body matching the
documented schema and content type, every authenticated route refusing the same request without a
key and with a wrong one (401), and schema-valid input accepted / schema-invalid input refused.

The app runs in-process (ASGI) with its own lifespan, as ``stoplist serve`` builds it, on the
embedded default and on PostgreSQL + Redis. The examples per operation are bounded to keep the suite
fast; ``bench/api_fuzz.py`` runs the same contract with many more examples (and schemathesis's
coverage and stateful phases) against a real server.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from tests.conftest import Env

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
SIGNING_KEYS = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
EXAMPLES = 8  # per operation and generation mode

# Refusals of input the OpenAPI document cannot describe: whether a string is an address (RFC
# 5322 / flanker), a domain, one of our signed tokens, a time still in the future, or whether an
# uploaded file is a CSV list of addresses.
SEMANTIC_ERRORS = {
    "invalid_address",
    "invalid_domain",
    "invalid_token",
    "expiry_in_past",
    "invalid_file",
    "target_refused",  # a webhook URL whose host is internal or does not resolve (SSRF guard)
}


def schema_valid_input_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """schemathesis's positive_data_acceptance, except for the refusals in SEMANTIC_ERRORS."""
    if response.status_code in (400, 422):
        if response.headers.get("content-type", [""])[0].startswith("text/html"):
            return None  # the unsubscribe page: invalid_token, rendered for a browser
        body = response.json()
        if isinstance(body, dict) and body.get("error") in SEMANTIC_ERRORS:
            return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    schema_valid_input_accepted,
    negative_data_rejection,
]


def fuzz(app: Any, key: str, *, examples: int, derandomize: bool = True) -> list[str]:
    """Run every operation of the committed spec against ``app``; the failures found, as text."""
    schema = schemathesis.openapi.from_path(SPEC)
    schema.app = app
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (
                schemathesis.GenerationMode.POSITIVE,
                schemathesis.GenerationMode.NEGATIVE,
            ):

                @settings(
                    max_examples=examples,
                    deadline=None,
                    derandomize=derandomize,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: schemathesis.Case) -> None:
                    case.call_and_validate(headers=headers, checks=CHECKS)

                try:
                    run()
                except Unsatisfiable:
                    pass  # nothing to make invalid (a route without parameters or body)
                except FailureGroup as exc:
                    failures.append(f"{operation.label} ({mode.value}):\n{exc.message}")
    finally:
        asgi.shutdown_lifespans()  # the app's engine and cache clients, on the app's own loop
    return failures


async def test_api_conforms_to_its_openapi_document(env: Env) -> None:
    settings_ = env.settings.model_copy(
        update={
            "signing_keys": SecretStr(SIGNING_KEYS),
            "return_path_domain": "bounces.example.net",
            "unsubscribe_domain": "unsubscribe.example.net",
            "public_base_url": "https://stoplist.example.net",
        }
    )
    # A second app on the same database, with its own lifespan on schemathesis's event loop (the
    # fixture's services belong to this loop, which the blocking client must not share).
    app = create_app(settings_)
    failures = await asyncio.to_thread(fuzz, app, env.keys["admin"], examples=EXAMPLES)
    assert not failures, "\n\n".join(failures)
