"""The floor for the check benchmark: bare FastAPI endpoints served exactly like `stoplist serve`
(one uvicorn process, same event loop and HTTP implementation), doing no lookup at all."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

app = FastAPI()


@app.get("/check")
async def check(address: str) -> Response:
    return Response(
        orjson.dumps({"address": address, "suppressed": False}), media_type="application/json"
    )


@app.post("/check")
async def check_batch(request: Request) -> Response:
    body: dict[str, Any] = orjson.loads(await request.body())
    results = [{"address": a, "suppressed": False} for a in body["addresses"]]
    return Response(orjson.dumps({"results": results}), media_type="application/json")
