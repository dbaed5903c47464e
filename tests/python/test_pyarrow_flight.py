"""The cluster through plain `pyarrow.flight`, the way a hand-written Flight client sees it.

The Flight SQL command is encoded by hand (fsql_helpers.command_statement_query). A client
must read EVERY endpoint of a FlightInfo, each from its own location (or from the server it
asked when the location list is empty), and the union is the answer.

gRPC status → pyarrow exception: INVALID_ARGUMENT → pa.ArrowInvalid, NOT_FOUND →
pa.ArrowKeyError, UNAUTHENTICATED → flight.FlightUnauthenticatedError, INTERNAL →
flight.FlightInternalError, UNKNOWN → flight.FlightServerError.
"""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from fsql_helpers import (
    Fetcher,
    endpoint_uris,
    execute,
    flight_info,
    is_reuse,
    pack_any,
    rows,
    sorted_rows,
    unique,
)

# What a refused ticket may raise: malformed (INVALID_ARGUMENT) or forged (UNAUTHENTICATED).
REFUSED_TICKET = (pa.ArrowInvalid, flight.FlightUnauthenticatedError)

N_ROWS = 10_000
SHARDS = 4


def fetch_all(client: flight.FlightClient, info: flight.FlightInfo) -> pa.Table:
    """Read every endpoint (each from its location) and check each stream's schema."""
    tables = []
    with Fetcher(client) as fetcher:
        for endpoint in info.endpoints:
            table = fetcher.fetch(endpoint)
            assert table.schema.equals(info.schema), (
                f"endpoint {endpoint_uris(endpoint)} schema {table.schema} "
                f"differs from FlightInfo schema {info.schema}"
            )
            tables.append(table)
    if not tables:
        return info.schema.empty_table()
    return pa.concat_tables(tables)


def assert_at_coordinator(info: flight.FlightInfo, coordinator: str) -> None:
    assert len(info.endpoints) == 1, [endpoint_uris(e) for e in info.endpoints]
    uris = endpoint_uris(info.endpoints[0])
    assert is_reuse(uris) or uris == [coordinator], uris


def assert_direct(info: flight.FlightInfo, coordinator: str, shards: int) -> set[str]:
    """One endpoint per shard, each located at a worker. Returns the worker URIs."""
    assert len(info.endpoints) == shards, [endpoint_uris(e) for e in info.endpoints]
    workers = set()
    for endpoint in info.endpoints:
        uris = endpoint_uris(endpoint)
        assert uris, "a direct endpoint must name the worker(s) holding its shard"
        for uri in uris:
            assert uri.startswith("grpc://"), uri
            assert uri != coordinator, uri
            workers.add(uri)
    return workers


@pytest.fixture(scope="module")
def big_table(coordinator_uri):
    """hash(a) over 4 shards: 10,000 rows, every key twice (so routing by hash shows)."""
    name = unique("t_big")
    keys = [(i * 7919) % 1_000_003 - 500_000 for i in range(N_ROWS // 2)]
    data = pa.table(
        {
            "a": pa.array(keys + keys, pa.int64()),
            "b": pa.array([f"b{i}" for i in range(N_ROWS)], pa.string()),
        }
    )
    with flightsql.connect(coordinator_uri) as conn:
        execute(
            conn,
            f"CREATE TABLE {name} (a BIGINT, b VARCHAR) "
            f"WITH (distribution = 'hash(a)', shards = {SHARDS})",
        )
        with conn.cursor() as cur:
            cur.adbc_ingest(name, data, mode="append")
    return name, data


@pytest.fixture
def client(coordinator_uri):
    c = flight.FlightClient(coordinator_uri)
    yield c
    c.close()


def test_plain_select_returns_every_row_once_from_workers(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT a, b FROM {name}")
    assert info.schema.names == ["a", "b"]
    workers = assert_direct(info, coordinator_uri, SHARDS)
    assert len(workers) == 2, workers  # 4 shards over the 2 workers of the local cluster
    assert info.total_records in (-1, N_ROWS)

    result = fetch_all(client, info)
    assert result.num_rows == N_ROWS
    assert sorted_rows(result) == sorted_rows(data)


def test_hash_shards_partition_the_keys(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT a FROM {name}")
    assert_direct(info, coordinator_uri, SHARDS)
    shard_of: dict[int, int] = {}
    with Fetcher(client) as fetcher:
        for i, endpoint in enumerate(info.endpoints):
            keys = fetcher.fetch(endpoint).column("a").to_pylist()
            assert keys, f"shard {i} of a hash-distributed table with {N_ROWS} rows is empty"
            for k in keys:
                assert shard_of.setdefault(k, i) == i, f"key {k} found in shards {shard_of[k]} and {i}"
    assert len(shard_of) == len(set(data.column("a").to_pylist()))


def test_filtered_projection_is_direct_and_exact(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT b, a + 1 AS a1 FROM {name} WHERE a >= 0")
    assert_direct(info, coordinator_uri, SHARDS)
    result = fetch_all(client, info)
    expected = [(b, a + 1) for a, b in rows(data) if a >= 0]
    assert sorted_rows(result) == sorted(expected)


def test_aggregate_is_one_endpoint_at_coordinator(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT COUNT(*) AS n, SUM(a) AS s, COUNT(DISTINCT a) AS d FROM {name}")
    assert_at_coordinator(info, coordinator_uri)
    result = fetch_all(client, info)
    keys = data.column("a").to_pylist()
    assert result.to_pylist() == [{"n": N_ROWS, "s": sum(keys), "d": len(set(keys))}]


def test_order_by_limit_is_one_endpoint_and_ordered(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT a, b FROM {name} ORDER BY a DESC, b LIMIT 25")
    assert_at_coordinator(info, coordinator_uri)
    result = fetch_all(client, info)
    assert rows(result) == sorted(rows(data), key=lambda r: (-r[0], r[1]))[:25]


def test_no_direct_serves_everything_from_coordinator(coordinator_uri_no_direct):
    name = unique("t_nodirect")
    data = pa.table({"a": pa.array(range(1000), pa.int64()), "b": pa.array([str(i) for i in range(1000)])})
    with flightsql.connect(coordinator_uri_no_direct) as conn:
        execute(conn, f"CREATE TABLE {name} (a BIGINT, b VARCHAR) WITH (distribution = 'hash(a)', shards = 4)")
        with conn.cursor() as cur:
            cur.adbc_ingest(name, data, mode="append")
    c = flight.FlightClient(coordinator_uri_no_direct)
    try:
        info = flight_info(c, f"SELECT a, b FROM {name}")
        assert_at_coordinator(info, coordinator_uri_no_direct)
        assert sorted_rows(fetch_all(c, info)) == sorted_rows(data)
    finally:
        c.close()


def test_default_distribution_is_one_shard_per_worker(coordinator_uri_3w):
    name = unique("t_default3")
    data = [(i, f"d{i}") for i in range(300)]
    with flightsql.connect(coordinator_uri_3w) as conn:
        execute(conn, f"CREATE TABLE {name} (a BIGINT, b VARCHAR)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", data)
    c = flight.FlightClient(coordinator_uri_3w)
    try:
        info = flight_info(c, f"SELECT a, b FROM {name}")
        workers = assert_direct(info, coordinator_uri_3w, 3)
        assert len(workers) == 3, workers
        assert sorted_rows(fetch_all(c, info)) == data
    finally:
        c.close()


def test_empty_table_plain_select(client, coordinator_uri):
    name = unique("t_empty_flight")
    with flightsql.connect(coordinator_uri) as conn:
        execute(conn, f"CREATE TABLE {name} (a BIGINT, b VARCHAR) WITH (distribution = 'hash(a)', shards = 4)")
    info = flight_info(client, f"SELECT a, b FROM {name}")
    result = fetch_all(client, info)
    assert result.num_rows == 0
    assert result.schema.names == ["a", "b"]


# ---------------------------------------------------------------------------
# Bad input is refused, and the servers keep working


def test_garbage_ticket_to_coordinator_is_refused(client, big_table):
    name, _ = big_table
    for ticket in [b"garbage", b"", b"\x0a\xff\xff\xff\xff\x0f"]:
        with pytest.raises(REFUSED_TICKET):
            client.do_get(flight.Ticket(ticket)).read_all()
    info = flight_info(client, f"SELECT COUNT(*) AS n FROM {name}")
    assert fetch_all(client, info).to_pylist() == [{"n": N_ROWS}]


def test_garbage_and_forged_tickets_to_worker_are_refused(client, coordinator_uri, big_table):
    name, data = big_table
    info = flight_info(client, f"SELECT a, b FROM {name}")
    assert_direct(info, coordinator_uri, SHARDS)
    endpoint = info.endpoints[0]
    worker = flight.FlightClient(endpoint_uris(endpoint)[0])
    try:
        with pytest.raises(REFUSED_TICKET):
            worker.do_get(flight.Ticket(b"garbage")).read_all()
        # A real ticket with one byte changed (the signature no longer matches).
        good = endpoint.ticket.ticket
        for position in (len(good) // 2, len(good) - 1):
            forged = bytearray(good)
            forged[position] ^= 0x01
            with pytest.raises(REFUSED_TICKET):
                worker.do_get(flight.Ticket(bytes(forged))).read_all()
        # The worker still serves the genuine ticket.
        table = worker.do_get(endpoint.ticket).read_all()
        assert table.schema.equals(info.schema)
    finally:
        worker.close()
    assert sorted_rows(fetch_all(client, info)) == sorted_rows(data)


def test_garbage_command_is_invalid_argument(client):
    bad_commands = [
        b"\xff\xfe not a protobuf",
        pack_any("arrow.flight.protocol.sql.NoSuchCommand", b""),
        pack_any("arrow.flight.protocol.sql.CommandStatementQuery", b"\x0a\xff\xff\xff\xff\x0f"),
    ]
    for command in bad_commands:
        with pytest.raises((pa.ArrowInvalid, pa.ArrowNotImplementedError)):
            client.get_flight_info(flight.FlightDescriptor.for_command(command))
    assert fetch_all(client, flight_info(client, "SELECT 1 AS one")).to_pylist() == [{"one": 1}]


def test_sql_errors_over_flight(client):
    with pytest.raises(pa.ArrowInvalid):
        flight_info(client, "SELEC nonsense")
    with pytest.raises(pa.ArrowKeyError):
        flight_info(client, f"SELECT * FROM {unique('no_such_table')}")
    assert fetch_all(client, flight_info(client, "SELECT 1 AS one")).to_pylist() == [{"one": 1}]


# ---------------------------------------------------------------------------
# Separate processes: `flight-worker` ×2 and `flight-coordinator serve`


def test_serve_mode_with_separate_workers(serve_cluster):
    coordinator, worker_uris = serve_cluster
    name = unique("t_serve")
    data = pa.table({"a": pa.array(range(2000), pa.int64()), "b": pa.array([f"s{i % 11}" for i in range(2000)])})
    with flightsql.connect(coordinator) as conn:
        execute(conn, f"CREATE TABLE {name} (a BIGINT, b VARCHAR) WITH (distribution = 'hash(a)', shards = 4)")
        with conn.cursor() as cur:
            cur.adbc_ingest(name, data, mode="append")
            cur.execute(f"SELECT b, COUNT(*) AS n FROM {name} GROUP BY b ORDER BY b")
            counts = rows(cur.fetch_arrow_table())
    expected: dict[str, int] = {}
    for b in data.column("b").to_pylist():
        expected[b] = expected.get(b, 0) + 1
    assert counts == sorted(expected.items())

    c = flight.FlightClient(coordinator)
    try:
        info = flight_info(c, f"SELECT a, b FROM {name}")
        workers = assert_direct(info, coordinator, SHARDS)
        assert workers <= set(worker_uris), (workers, worker_uris)
        assert sorted_rows(fetch_all(c, info)) == sorted_rows(data)
    finally:
        c.close()
