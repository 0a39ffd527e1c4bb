"""Intake processing in a child process (``intake_process = "separate"``): a DSN sent over SMTP to
the sink ends as a suppression on the check; a child that dies is replaced, and nothing sent
meanwhile is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from app.intake.child import open_intake
from app.intake.parse_pool import PROCESSING_NICE
from app.intake.smtp import start_sink
from tests.app.test_smtp import HARD_BOUNCE, SINK_DOMAINS, send, wait_for
from tests.conftest import Env

pytestmark = pytest.mark.slow

CHILD_NICE = min(os.getpriority(os.PRIO_PROCESS, 0) + PROCESSING_NICE, 19)


async def _suppressed(env: Env, address: str) -> bool:
    r = await env.client.get("/v1/check", params={"address": address}, headers=env.auth("check"))
    assert r.status_code == 200
    return bool(r.json()["suppressed"])


def _bounce_for(address: str) -> bytes:
    return HARD_BOUNCE.replace(b"carol@example.net", address.encode())


async def test_separate_processor_turns_a_dsn_into_a_suppression(pg_env: Env) -> None:
    settings = pg_env.settings.model_copy(
        update={
            "smtp_port": 0,
            "smtp_domains": SINK_DOMAINS,
            "parse_workers": 1,
            "intake_process": "separate",
            "intake_sweep_interval_s": 300.0,  # so only the wake-up can make it this fast
        }
    )
    sink = await start_sink(dataclasses.replace(pg_env.services, settings=settings))
    child = sink.intake.child
    try:
        assert child is not None and child.process is not None
        assert not sink.intake.processor.running  # nothing is processed on this loop
        # Processing is background work: it runs below the service's CPU priority.
        assert child.process.pid is not None
        await wait_for(
            lambda: asyncio.sleep(
                0, os.getpriority(os.PRIO_PROCESS, child.process.pid) == CHILD_NICE
            ),
            timeout=30,
        )
        code, msg = await asyncio.to_thread(send, sink.port, _bounce_for("dora@example.net"))
        assert code == 250, msg

        async def dora() -> bool:
            return await _suppressed(pg_env, "dora@example.net")

        await wait_for(dora, timeout=60)

        # The child dies: the message stored meanwhile is processed by the next one.
        first = child.process
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        await wait_for(lambda: asyncio.sleep(0, not first.is_alive()), timeout=10)
        code, msg = await asyncio.to_thread(send, sink.port, _bounce_for("erin@example.net"))
        assert code == 250, msg

        async def erin() -> bool:
            return await _suppressed(pg_env, "erin@example.net")

        await wait_for(erin, timeout=60)
        assert child.restarts == 1 and child.process is not first
        with pytest.raises(ProcessLookupError):  # its parse workers were killed with it
            os.killpg(first.pid, 0)
        last = child.process
    finally:
        await sink.close()
    assert last is not None and not last.is_alive() and last.exitcode == 0  # stopped cleanly


async def test_embedded_mode_always_processes_inline(env: Env) -> None:
    settings = env.settings.model_copy(update={"intake_process": "separate"})
    intake = open_intake(dataclasses.replace(env.services, settings=settings))
    try:
        assert (intake.child is None) == (env.services.db.dialect == "sqlite")
    finally:
        await intake.close()


async def test_child_rebuilds_the_cache_after_its_write_through_failed(pg_env: Env) -> None:
    """The processing child cannot reach Redis while it applies a bounce: the suppression is in
    the database but not in the replica the service reads. Once Redis is reachable again the child
    marks the replica cold and rebuilds it, so the check reads the address as suppressed (before,
    the service trusted the replica and read it as clear for ever)."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from app.models import InboundMessage
    from tests.faultproxy import FaultProxy

    at = make_url(pg_env.settings.redis_url or "")
    proxy = await FaultProxy(at.host or "", at.port or 6379).start()
    child_redis = at.set(port=proxy.port).render_as_string(hide_password=False)
    settings = pg_env.settings.model_copy(
        update={
            "smtp_port": 0,
            "smtp_domains": SINK_DOMAINS,
            "parse_workers": 1,
            "intake_process": "separate",
            "redis_url": child_redis,
        }
    )
    proxy.refuse()
    sink = await start_sink(dataclasses.replace(pg_env.services, settings=settings))
    try:
        code, msg = await asyncio.to_thread(send, sink.port, _bounce_for("faye@example.net"))
        assert code == 250, msg

        async def processed() -> bool:
            async with pg_env.services.db.read() as s:
                states = (await s.scalars(select(InboundMessage.state))).all()
            return bool(states) and all(state == "processed" for state in states)

        await wait_for(processed, timeout=60)
        assert not await _suppressed(pg_env, "faye@example.net")  # the replica missed the write
        proxy.passthrough()

        async def faye() -> bool:
            return await _suppressed(pg_env, "faye@example.net")

        await wait_for(faye, timeout=30)
    finally:
        await sink.close()
        await proxy.aclose()
