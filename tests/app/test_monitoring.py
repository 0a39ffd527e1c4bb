"""The shipped Prometheus alert rules and Grafana dashboard query only metrics the app exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Env

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "stoplist-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stoplist.json"
METRIC = re.compile(r"\b(stoplist_[a-z0-9_]+)")


def alert_expressions() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in doc["panels"] for t in panel["targets"]]


def exported(text: str) -> set[str]:
    """Every series name /metrics can carry: sample names, and the declared families with the
    suffixes of their type (a labelled metric shows no sample until it is first used)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            elif kind == "counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_the_files_name_what_they_should() -> None:
    alerts = " ".join(alert_expressions())
    for counter in ("hard", "soft", "complaint", "deferred", "sent", "delivered"):
        assert f'"{counter}' in alerts or f"|{counter}" in alerts
    assert "stoplist_intake_oldest_pending_seconds" in alerts
    panels = " ".join(dashboard_expressions())
    for metric in (
        "stoplist_rate_counts_last_hour",
        "stoplist_smtp_messages_total",
        "stoplist_intake_messages",
        "stoplist_check_latency_seconds_bucket",
        "stoplist_cache_fallbacks_total",
    ):
        assert metric in panels


async def test_every_metric_queried_is_on_metrics(env: Env) -> None:
    r = await env.client.get("/metrics", headers=env.auth("check"))
    assert r.status_code == 200
    names = exported(r.text)
    queried = {m for e in alert_expressions() + dashboard_expressions() for m in METRIC.findall(e)}
    assert len(queried) >= 8
    assert sorted(queried - names) == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    for args in (["check", "rules", ALERTS.name], ["test", "rules", "stoplist-alerts.test.yml"]):
        done = subprocess.run(
            ["promtool", *args], cwd=ALERTS.parent, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
