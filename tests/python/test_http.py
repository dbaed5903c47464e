"""The HTTP port of both binaries (`--http-listen`): /health, /ready and Prometheus /metrics.

Started through the real binaries on ephemeral loopback ports; the HTTP address is read from
the `... http on http://HOST:PORT` line each prints before its `listening on` line. HTTP is
plain `urllib` (stdlib only).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import ServerProcess, binary, http_url, start_local_cluster

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
# Straight to the loopback port, whatever http_proxy says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET; error statuses are returned, not raised."""
    try:
        with OPENER.open(url, timeout=30) as response:
            return (
                response.status,
                response.headers.get("Content-Type", ""),
                response.read().decode("utf-8"),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode("utf-8")


def samples(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) of every sample line of a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        found.append((match.group(1), match.group(2) or "", float(match.group(3))))
    return found


def metric(text: str, name: str) -> list[tuple[str, float]]:
    """(labels, value) of the samples of `name`."""
    return [(labels, value) for n, labels, value in samples(text) if n == name]


def scrape(base: str) -> str:
    status, content_type, body = get(base + "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain"), content_type
    return body


@pytest.fixture(scope="module")
def local_http(tmp_path_factory):
    """`flight-coordinator local --workers 2 --http-listen 127.0.0.1:0`: (Flight URI, HTTP URL)."""
    server = start_local_cluster(tmp_path_factory, 2, "--http-listen", "127.0.0.1:0")
    yield server.uri, http_url(server)
    server.stop_checked()


def test_local_health_and_ready(local_http):
    _, base = local_http
    assert get(base + "/health")[::2] == (200, "ok\n")
    status, _, body = get(base + "/ready")
    assert status == 200, body
    assert get(base + "/nope")[0] == 404


def test_local_metrics_show_the_workers(local_http):
    _, base = local_http
    text = scrape(base)
    assert metric(text, "fsql_live_workers") == [("", 2.0)]
    memory = metric(text, "fsql_worker_duckdb_memory_bytes")
    workers = {labels for labels, _ in memory}
    assert len(workers) == 2, memory
    assert all(labels.startswith('{worker="') for labels in workers), memory
    assert len(metric(text, "fsql_worker_shards")) == 2, text


def statements(text: str) -> float:
    """Statements counted: ADBC runs a query as a prepared statement, pyarrow.flight as
    `CommandStatementQuery`."""
    kinds = dict(metric(text, "fsql_queries_total"))
    return kinds.get('{kind="query"}', 0.0) + kinds.get('{kind="prepared"}', 0.0)


def test_local_metrics_count_queries(local_http):
    uri, base = local_http
    text = scrape(base)
    before_total = sum(v for _, v in metric(text, "fsql_queries_total"))
    before = statements(text)
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        assert cur.fetchall() == [(42,)]
    text = scrape(base)
    assert statements(text) >= before + 1, metric(text, "fsql_queries_total")
    assert sum(v for _, v in metric(text, "fsql_queries_total")) > before_total
    assert metric(text, "fsql_query_duration_seconds_count"), text


def test_standalone_worker(tmp_path_factory):
    """A worker without a registry is ready at once and serves its own series."""
    log_dir = tmp_path_factory.mktemp("http-worker-logs")
    argv = [
        binary("FSQL_WORKER_BIN", "flight-worker"),
        "--listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0",
        "--data-dir", tmp_path_factory.mktemp("http-worker-data"),
        "--secret", "0123456789abcdef0123",
    ]
    server = ServerProcess("flight-worker-http", argv, log_dir)
    try:
        base = http_url(server)
        assert get(base + "/health")[::2] == (200, "ok\n")
        status, _, body = get(base + "/ready")
        assert (status, body) == (200, "ready\n")
        text = scrape(base)
        assert metric(text, "fsql_worker_shards") == [(f'{{worker="{worker_id(server)}"}}', 0.0)]
        assert len(metric(text, "fsql_worker_duckdb_memory_bytes")) == 1, text
        # HEAD: the headers only.
        request = urllib.request.Request(base + "/health", method="HEAD")
        with OPENER.open(request, timeout=30) as response:
            assert response.status == 200
            assert response.read() == b""
    finally:
        server.stop_checked()


def worker_id(server: ServerProcess) -> str:
    for line in server.stdout_lines:
        match = re.match(r"flight-worker (\S+) listening on ", line)
        if match:
            return match.group(1)
    pytest.fail(f"no worker id in {server.stdout_lines}")


def test_local_without_users_refuses_a_public_http_address(tmp_path):
    result = subprocess.run(
        [
            str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")),
            "local",
            "--listen", "127.0.0.1:0",
            "--http-listen", "0.0.0.0:0",
            "--data-dir", str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to start" in result.stderr, result.stderr
    assert "--http-listen 127.0.0.1:PORT" in result.stderr, result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ready(base: str, status: int, timeout: float) -> str:
    """Polls /ready until it answers `status`; returns the body."""
    deadline = time.monotonic() + timeout
    while True:
        got, _, body = get(base + "/ready")
        if got == status:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"/ready stayed {got} ({body.strip()!r}), wanted {status}")
        time.sleep(0.1)


def test_worker_ready_follows_the_registry(tmp_path_factory):
    """With --registry, /ready is 200 once the worker is registered, and stays 200 while
    etcd is gone (the worker keeps serving the coordinators that know it)."""
    etcd_bin = os.environ.get("FSQL_ETCD_BIN") or shutil.which("etcd")
    if not etcd_bin:
        pytest.skip("no etcd (FSQL_ETCD_BIN or etcd on PATH)")
    d = tmp_path_factory.mktemp("http-etcd")
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        [
            etcd_bin,
            "--data-dir", str(d / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(d / "etcd.log", "wb"),
    )
    server = None
    try:
        argv = [
            binary("FSQL_WORKER_BIN", "flight-worker"),
            "--listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0",
            "--data-dir", d / "worker",
            "--secret", "0123456789abcdef0123",
            "--registry", f"etcd://127.0.0.1:{client}",
            "--cluster", "http-test",
            "--lease-ttl", "2s",
        ]
        server = ServerProcess("flight-worker-http-registry", argv, d)
        base = http_url(server)
        assert wait_for_ready(base, 200, 30) == "ready\n"
        etcd.kill()
        etcd.wait()
        # Longer than the lease: the worker knows it is no longer registered.
        time.sleep(4)
        got, _, body = get(base + "/ready")
        assert (got, body) == (200, "ready\n")
        assert get(base + "/health")[0] == 200
    finally:
        if server is not None:
            server.stop_checked()
        if etcd.poll() is None:
            etcd.kill()
            etcd.wait()
