"""The coordinator's status page (`GET /` on its `--http-listen` port), read by a real browser.

A local cluster started from the binaries with `--http-listen 127.0.0.1:0`; a table is created
and loaded and a few statements run through ADBC (and a failing one through pyarrow.flight);
then headless Chromium loads the page (`--dump-dom`) and the DOM is checked: the workers, the
table with its row count, its shards, and the statements with their states.

Chromium is Debian's `chromium` (or FSQL_CHROMIUM_BIN). Without it the test is skipped, unless
FSQL_REQUIRE_CHROMIUM is set (scripts/test.sh sets it and installs chromium), then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import http_url, start_local_cluster
from fsql_helpers import execute, flight_info, query, rows, unique

CHROMIUM_TIMEOUT = 120
# Straight to the loopback port, whatever http_proxy says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chromium_binary() -> str | None:
    """FSQL_CHROMIUM_BIN, else `chromium` (Debian) or `chromium-browser` on PATH."""
    configured = os.environ.get("FSQL_CHROMIUM_BIN")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_binary()
    if path is None or not os.access(path, os.X_OK):
        if path is None:
            why = "chromium is not installed (no `chromium` or `chromium-browser` on PATH)"
        else:
            why = f"FSQL_CHROMIUM_BIN={path} is not an executable"
        why += "; install it with `apt-get install chromium`"
        if os.environ.get("FSQL_REQUIRE_CHROMIUM"):
            pytest.fail(f"{why} (FSQL_REQUIRE_CHROMIUM is set)", pytrace=False)
        pytest.skip(f"{why}; set FSQL_REQUIRE_CHROMIUM=1 to fail instead of skipping")
    return path


def dump_dom(chromium: str, url: str, profile_dir) -> str:
    """The DOM of `url` after it loaded in headless Chromium, serialized as HTML."""
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        "--dump-dom",
        url,
    ]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            timeout=CHROMIUM_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"chromium did not finish within {CHROMIUM_TIMEOUT}s: {' '.join(argv)}\n"
            f"stderr:\n{(exc.stderr or b'').decode('utf-8', 'replace')[-4000:]}",
            pytrace=False,
        )
    dom = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0 or "<html" not in dom:
        pytest.fail(
            f"chromium exited with {result.returncode}: {' '.join(argv)}\n"
            f"stdout:\n{dom[-4000:]}\n"
            f"stderr:\n{result.stderr.decode('utf-8', 'replace')[-4000:]}",
            pytrace=False,
        )
    return dom


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class Page(HTMLParser):
    """The parts of the status page the test reads: the title, the section ids, the text of
    each element with an id, and each table (by id) as a header and rows of cell texts."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections: list[str] = []
        self.meta_refresh: str | None = None
        self.tables: dict[str, dict] = {}
        self.texts: dict[str, str] = {}
        self.tags: set[str] = set()
        self._stack: list[tuple[str, str | None]] = []  # open elements: (tag, id)
        self._table: dict | None = None
        self._row: list[str] | None = None
        self._row_class = ""
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.meta_refresh = a.get("content")
        if tag in VOID:
            return
        self._stack.append((tag, a.get("id")))
        if a.get("id"):
            self.texts.setdefault(a["id"], "")
        if tag == "section" and a.get("id"):
            self.sections.append(a["id"])
        elif tag == "table":
            self._table = {"header": [], "rows": [], "classes": []}
            self.tables[a.get("id") or f"table{len(self.tables)}"] = self._table
        elif tag == "tr":
            self._row = []
            self._row_class = a.get("class") or ""
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        in_thead = any(t == "thead" for t, _ in self._stack)
        while self._stack and self._stack.pop()[0] != tag:
            pass
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if in_thead:
                self._table["header"] = self._row
            else:
                self._table["rows"].append(self._row)
                self._table["classes"].append(self._row_class)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if any(t == "title" for t, _ in self._stack):
            self.title += data
        if self._cell is not None:
            self._cell.append(data)
        for _, element_id in self._stack:
            if element_id:
                self.texts[element_id] += data

    def records(self, table_id: str) -> list[dict[str, str]]:
        """The rows of table `table_id` as {header: cell text}, without the "none" row."""
        assert table_id in self.tables, f"no table with id {table_id}: {sorted(self.tables)}"
        table = self.tables[table_id]
        header = table["header"]
        assert header, f"table {table_id} has no header row"
        return [
            dict(zip(header, row, strict=True)) | {"__class__": cls}
            for row, cls in zip(table["rows"], table["classes"])
            if len(row) == len(header)
        ]


@pytest.fixture(scope="module")
def status_cluster(tmp_path_factory):
    """`flight-coordinator local --workers 2 --http-listen 127.0.0.1:0`: (Flight URI, HTTP URL)."""
    server = start_local_cluster(tmp_path_factory, 2, "--http-listen", "127.0.0.1:0")
    yield server.uri, http_url(server)
    server.stop_checked()


def test_status_page_in_chromium(chromium, status_cluster, tmp_path):
    uri, base = status_cluster
    table = unique("status_page")
    missing = unique("no_such_table")
    data = pa.table(
        {
            "id": pa.array(range(1, 8), pa.int64()),
            "name": pa.array([f"row {i}" for i in range(1, 8)], pa.string()),
        }
    )
    count_sql = f"SELECT count(*) AS n FROM {table}"
    lookup_sql = f"SELECT name, '<b>bold</b> & \"quoted\"' AS markup FROM {table} WHERE id = 3"
    failing_sql = f"SELECT * FROM {missing}"
    with flightsql.connect(uri) as conn:
        execute(
            conn,
            f"CREATE TABLE {table} (id BIGINT, name VARCHAR) "
            "WITH (distribution = 'hash(id)', shards = 3)",
        )
        with conn.cursor() as cur:
            cur.adbc_ingest(table, data, mode="append")
        conn.commit()
        assert rows(query(conn, count_sql)) == [(7,)]
        assert rows(query(conn, lookup_sql)) == [("row 3", '<b>bold</b> & "quoted"')]
        # ADBC prepares every statement; a statement that fails to prepare is not one the
        # coordinator ran. Send the failing one as a plain CommandStatementQuery instead.
        client = flight.FlightClient(uri)
        try:
            with pytest.raises(pa.ArrowException, match=missing):  # NOT_FOUND: ArrowKeyError
                flight_info(client, failing_sql)
        finally:
            client.close()
        workers = rows(query(conn, "SELECT id, address FROM system.workers ORDER BY id"))
    assert len(workers) == 2, workers

    # Plain HTTP first: the page is HTML, served whole.
    with OPENER.open(base + "/", timeout=30) as response:
        assert response.status == 200
        assert response.headers.get("Content-Type", "").startswith("text/html"), response.headers
        served = response.read().decode("utf-8")
    assert "<script" not in served.lower()

    dom = dump_dom(chromium, base + "/", tmp_path / "chromium-profile")
    page = Page(dom)
    context = f"DOM:\n{dom[:20000]}"

    assert page.title == "fsql cluster status", context
    assert page.meta_refresh == "5", context
    assert "script" not in page.tags, context
    for section in ("workers", "tables", "shards", "queries"):
        assert section in page.sections, context
    summary = page.texts.get("summary", "")
    assert re.search(r"coordinator \S+ · 2 live workers", summary), summary
    assert page.texts.get("live-workers") == "2", context

    # Workers: every id with its address, live.
    shown = {r["id"]: r for r in page.records("workers-table")}
    for worker_id, address in workers:
        assert worker_id in shown, (worker_id, shown)
        assert shown[worker_id]["address"] == address, shown[worker_id]
        assert shown[worker_id]["state"] == "live", shown[worker_id]

    # The table with its layout and row count.
    tables = {r["name"]: r for r in page.records("tables-table")}
    assert table in tables, (table, tables)
    assert tables[table]["rows"] == "7", tables[table]
    assert tables[table]["shards"] == "3", tables[table]
    assert tables[table]["distribution"].startswith("hash"), tables[table]

    # Its shards: 0..2, each on a live worker, holding the 7 rows between them.
    shards = [r for r in page.records("shards-table") if r["table"] == table]
    assert sorted(int(r["shard"]) for r in shards) == [0, 1, 2], shards
    assert sum(int(r["rows"]) for r in shards) == 7, shards
    worker_ids = {w for w, _ in workers}
    for r in shards:
        assert set(r["workers"].split(",")) <= worker_ids, r
        assert r["live_replicas"] == "1", r

    # The statements, newest first; the failed one says so, with its error.
    recent = page.records("queries-recent")
    by_sql = {}
    for r in recent:
        by_sql.setdefault(r["sql"], r)
    for sql in (count_sql, lookup_sql):
        assert sql in by_sql, (sql, [r["sql"] for r in recent])
        assert by_sql[sql]["state"] == "finished", by_sql[sql]
    assert failing_sql in by_sql, (failing_sql, [r["sql"] for r in recent])
    failed = by_sql[failing_sql]
    assert failed["state"] == "failed", failed
    assert failed["__class__"] == "state-failed", failed
    assert missing in failed["error"], failed
    assert by_sql[count_sql]["rows"] in ("1", ""), by_sql[count_sql]
    started = [r["started"] for r in recent]
    assert started == sorted(started, reverse=True), started

    # Statement text is shown as text, never as markup.
    assert "<b>bold</b>" not in dom, context
    assert "&lt;b&gt;bold&lt;/b&gt;" in dom, context
    assert "queries-running" in page.tables, context
