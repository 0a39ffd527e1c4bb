"""The set-based insert's parameters: one array per column, JSON columns as JSON text."""

from __future__ import annotations

import json

from app.models import Event
from app.set_insert import UnnestInsert


def test_json_columns_travel_as_the_json_of_each_value() -> None:
    insert = UnnestInsert(Event.__table__, ["address", "detail"])  # type: ignore[arg-type]
    details = [{"remote_mta": "mx.example.com", 5: "five"}, None, {"big": 2**70, "s": "é\u2028"}]
    params = insert.params([{"address": "a@example.com", "detail": d} for d in details])
    assert params["address"] == ["a@example.com"] * 3
    texts = params["detail"]
    assert all(isinstance(t, str) for t in texts)
    # Keys that are not strings become strings; None is JSON null; what orjson refuses (an
    # integer beyond 64 bits) is still written.
    assert [json.loads(t) for t in texts] == [
        {"remote_mta": "mx.example.com", "5": "five"},
        None,
        {"big": 2**70, "s": "é\u2028"},
    ]
    assert "CAST(CAST(:detail AS text[]) AS jsonb[])" in insert.sql
