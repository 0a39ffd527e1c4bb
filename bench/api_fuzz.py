"""The API against ``openapi/openapi.json``, at length: schemathesis (all four phases: examples,
coverage, fuzzing, stateful) against `stoplist serve` over loopback, with a valid admin key.

    python bench/api_fuzz.py [--backend sqlite|postgres|both] [--max-examples 300] [--seed N]

The same contract as ``tests/app/test_api_schema.py`` (which runs a few examples per operation in
the suite): no 5xx; status codes, content types, headers and bodies as documented; every
authenticated route refusing the request without a key; schema-valid input accepted except the
refusals the document cannot describe (``SEMANTIC_ERRORS`` there); schema-invalid input refused.
On top of that, schemathesis's checks for undeclared methods (405 with a right ``Allow``) and its
stateful sequences (``use_after_free`` aside: ``DELETE`` unsuppresses, the history stays).

PostgreSQL: a database of its own (created and dropped) on the server of
``STOPLIST_BENCH_PG_URL`` (default postgresql://postgres@127.0.0.1:5432/test); Redis db 12 of
``STOPLIST_BENCH_REDIS_URL`` with a prefix of its own, deleted at the end. The server's log is
scanned for tracebacks (a handled 500 still logs one). Reports: ``bench/out/api_fuzz-<backend>/``.
Exit status 0 only when every backend passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
SPEC = ROOT / "openapi" / "openapi.json"
OUT = ROOT / "bench" / "out"
KEY = "sl_" + "apifuzzapifuzzapifuzzapifuzzapifuzz00000"[:40]
SIGNING_KEYS = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PG_ADMIN = os.environ.get("STOPLIST_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STOPLIST_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def pg_database(name: str, *, drop: bool) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def start_server(env: dict[str, str], port: int, logfile: Path) -> subprocess.Popen[bytes]:
    handle = logfile.open("wb")
    proc = subprocess.Popen(
        [str(BIN / "stoplist"), "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {logfile}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not become ready; see {logfile}")


def run_schemathesis(port: int, args: argparse.Namespace, report_dir: Path) -> int:
    """``st run`` as a child process, with the suite's check loaded as a hook module."""
    command = [
        str(BIN / "st"),
        "run",
        str(SPEC),
        "--url",
        f"http://127.0.0.1:{port}",
        "-H",
        f"Authorization: Bearer {KEY}",
        "--max-examples",
        str(args.max_examples),
        "--exclude-checks",
        # positive_data_acceptance: replaced by the suite's schema_valid_input_accepted.
        # use_after_free: DELETE unsuppresses; the address's entries and history stay readable
        # by design (the audit trail), which this check takes for a deleted resource still served.
        "positive_data_acceptance,use_after_free",
        "--generation-database",
        "none",
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    env = os.environ | {"SCHEMATHESIS_HOOKS": "bench.api_fuzz", "PYTHONPATH": str(ROOT)}
    log(" ".join(c if "Bearer" not in c else "'Authorization: Bearer …'" for c in command))
    # schemathesis keeps a crash cache under its working directory: the report directory.
    return subprocess.run(command, env=env, cwd=report_dir, check=False).returncode


def fuzz_backend(backend: str, args: argparse.Namespace) -> bool:
    port = free_port()
    tag = f"apifuzz_{os.getpid()}"
    report_dir = OUT / f"api_fuzz-{backend}"
    report_dir.mkdir(parents=True, exist_ok=True)
    logfile = report_dir / "server.log"
    env = os.environ | {
        "STOPLIST_HTTP_PORT": str(port),
        "STOPLIST_BOOTSTRAP_ADMIN_KEY": KEY,
        "STOPLIST_SIGNING_KEYS": SIGNING_KEYS,
        "STOPLIST_RETURN_PATH_DOMAIN": "bounces.example.net",
        "STOPLIST_UNSUBSCRIBE_DOMAIN": "unsubscribe.example.net",
        "STOPLIST_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "STOPLIST_SMTP_ENABLED": "false",
    }
    tmp = tempfile.TemporaryDirectory(prefix="stoplist-apifuzz-")
    prefix = f"{tag}:"
    if backend == "sqlite":
        env["STOPLIST_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp.name}/fuzz.db"
        env.pop("STOPLIST_REDIS_URL", None)
    else:
        asyncio.run(pg_database(tag, drop=False))
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        env["STOPLIST_DATABASE_URL"] = f"{base}/{tag}"
        env["STOPLIST_REDIS_URL"] = REDIS_URL
        env["STOPLIST_REDIS_PREFIX"] = prefix
    proc = None
    started = time.perf_counter()
    try:
        proc = start_server(env, port, logfile)
        log(f"{backend}: serving on 127.0.0.1:{port}")
        code = run_schemathesis(port, args, report_dir)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if backend == "postgres":
            asyncio.run(pg_database(tag, drop=True))
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()
        tmp.cleanup()
    tracebacks = logfile.read_text(errors="replace").count("Traceback")
    ok = code == 0 and tracebacks == 0
    log(
        f"{backend}: schemathesis exit {code}, {tracebacks} tracebacks in the server log, "
        f"{time.perf_counter() - started:.0f} s: {'PASS' if ok else 'FAIL'} (reports: {report_dir})"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--max-examples", type=int, default=300, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    results = {backend: fuzz_backend(backend, args) for backend in backends}
    log("summary: " + ", ".join(f"{b} {'PASS' if ok else 'FAIL'}" for b, ok in results.items()))
    raise SystemExit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
else:
    # Loaded by schemathesis as its hook module (SCHEMATHESIS_HOOKS=bench.api_fuzz): the suite's
    # acceptance check, which knows the refusals the document cannot describe.
    import schemathesis

    from tests.app.test_api_schema import schema_valid_input_accepted

    schemathesis.check(schema_valid_input_accepted)
