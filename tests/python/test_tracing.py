"""One query followed across processes: the coordinator's `query` span and the workers' spans
carry the same query id (sent in the `x-fsql-query-id` gRPC metadata and in shard tickets),
in the JSON logs of `FSQL_LOG_FORMAT=json`.

Two `flight-worker` processes and `flight-coordinator serve --workers ...`, all on loopback.
"""

from __future__ import annotations

import json
import time

import adbc_driver_flightsql.dbapi as flightsql

from conftest import ServerProcess, binary
from fsql_helpers import unique

SECRET = "tracing-test-secret-0123456789"
JSON_LOGS = {"FSQL_LOG_FORMAT": "json", "FSQL_LOG": "info"}


def events(server: ServerProcess) -> list[dict]:
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def query_ids(event: dict) -> set[str]:
    """Every query_id in an event: its own fields and those of its spans."""
    ids = set()
    for fields in [event.get("fields", {}), event.get("span", {}), *event.get("spans", [])]:
        if "query_id" in fields:
            ids.add(fields["query_id"])
    return ids


def test_query_id_follows_a_query_to_the_workers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("tracing-logs")
    workers = []
    servers = []
    try:
        for i in range(2):
            w = ServerProcess(
                f"tracing-worker-{i}",
                [
                    binary("FSQL_WORKER_BIN", "flight-worker"),
                    "--listen", "127.0.0.1:0",
                    "--data-dir", tmp_path_factory.mktemp(f"tracing-worker-{i}"),
                    "--secret", SECRET,
                ],
                logs,
                env=JSON_LOGS,
            )
            servers.append(w)
            workers.append(w)
        coordinator = ServerProcess(
            "tracing-coordinator",
            [
                binary("FSQL_COORDINATOR_BIN", "flight-coordinator"),
                "serve",
                "--listen", "127.0.0.1:0",
                "--workers", ",".join(w.uri.removeprefix("grpc://") for w in workers),
                "--secret", SECRET,
                "--no-auth",
            ],
            logs,
            env=JSON_LOGS,
        )
        servers.append(coordinator)
        t = unique("traced")
        with flightsql.connect(coordinator.uri) as conn:
            with conn.cursor() as cur:
                cur.execute(f"CREATE TABLE {t} (k BIGINT, v VARCHAR) WITH (shards = 2)")
                cur.execute(f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
                cur.execute(f"SELECT count(*) AS n FROM {t}")
                assert cur.fetchall() == [(4,)]
                cur.execute(f"CREATE TABLE {t}_copy AS SELECT * FROM {t}")
                cur.execute(
                    "SELECT id, sql FROM system.queries WHERE state = 'finished' "
                    f"AND sql LIKE '%{t}%' AND sql NOT LIKE 'CREATE%'"
                )
                ids = {sql.split()[0]: qid for qid, sql in cur.fetchall()}
                cur.execute(f"SELECT id FROM system.queries WHERE sql LIKE 'CREATE TABLE {t}_copy%'")
                (copy_id,) = cur.fetchone()
        insert_id, select_id = ids["INSERT"], ids["SELECT"]
        time.sleep(0.5)  # let the last log lines reach the files

        # The coordinator logged each statement under its id.
        coord = events(coordinator)
        for qid in (insert_id, select_id):
            assert any(
                qid in query_ids(e) and e.get("fields", {}).get("message") == "statement"
                for e in coord
            ), f"no statement event for {qid} in the coordinator log"
        # Each worker wrote its shard of the INSERT (DoPut, id from the gRPC metadata) and
        # ran its shard of the SELECT (id from the ticket), under the same ids.
        for w in workers:
            evs = events(w)
            assert any(
                insert_id in query_ids(e) and e.get("span", {}).get("name") == "do_put"
                for e in evs
            ), f"{w.name} logged no write for query {insert_id}"
            assert any(
                select_id in query_ids(e)
                and e.get("fields", {}).get("message") == "fragment finished"
                for e in evs
            ), f"{w.name} logged no fragment for query {select_id}"
            # CREATE TABLE AS: the shard reads and the writes under the statement's id.
            for span in ("do_get", "do_put"):
                assert any(
                    copy_id in query_ids(e) and e.get("span", {}).get("name") == span for e in evs
                ), f"{w.name} logged no {span} for query {copy_id}"
    finally:
        for s in reversed(servers):
            s.stop_checked()
