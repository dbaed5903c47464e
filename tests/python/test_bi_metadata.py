"""What BI tools do first through ADBC: catalog browsing with filters, column types, session
options, schema-only execution (GetSchema) and incremental execution (PollFlightInfo)."""

from __future__ import annotations

import json

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from fsql_helpers import CATALOG, SCHEMA, execute, query, unique

SESSION = "adbc.flight.sql.session."


@pytest.fixture(scope="module")
def tables(coordinator_uri):
    """Three tables whose names exercise LIKE patterns: `<p>_sales`, `<p>xsales`, `<p>_notes`."""
    prefix = unique("bi")
    names = {
        "sales": f"{prefix}_sales",
        "xsales": f"{prefix}xsales",
        "notes": f"{prefix}_notes",
    }
    with flightsql.connect(coordinator_uri) as conn:
        execute(
            conn,
            f"CREATE TABLE {names['sales']} (id BIGINT, amount DECIMAL(12, 2), region VARCHAR, "
            "day DATE) WITH (distribution = 'hash(id)', shards = 3)",
        )
        execute(conn, f"CREATE TABLE {names['xsales']} (id BIGINT)")
        execute(conn, f"CREATE TABLE {names['notes']} (id BIGINT, note VARCHAR)")
        execute(
            conn,
            f"INSERT INTO {names['sales']} VALUES "
            "(1, 10.50, 'north', DATE '2024-01-01'), (2, 20.25, 'south', DATE '2024-01-02'), "
            "(3, 30.00, 'north', NULL), (4, NULL, NULL, DATE '2024-01-04')",
        )
    return prefix, names


def table_names(conn, **filters) -> list[str]:
    objects = conn.adbc_get_objects(depth="tables", **filters).read_all().to_pylist()
    return sorted(
        t["table_name"]
        for c in objects
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    )


def test_get_objects_like_patterns(conn, tables):
    prefix, names = tables
    assert table_names(conn, table_name_filter=f"{prefix}%") == sorted(names.values())
    # `_` matches one character, `\_` only an underscore.
    assert table_names(conn, table_name_filter=f"{prefix}_sales") == sorted(
        [names["sales"], names["xsales"]]
    )
    assert table_names(conn, table_name_filter=f"{prefix}\\_sales") == [names["sales"]]
    assert table_names(conn, table_name_filter=f"{prefix}%notes") == [names["notes"]]
    assert table_names(conn, db_schema_filter="pub%", table_name_filter=f"{prefix}%") == sorted(
        names.values()
    )
    assert table_names(conn, db_schema_filter="nope%", table_name_filter=f"{prefix}%") == []
    assert table_names(conn, catalog_filter="other", table_name_filter=f"{prefix}%") == []


def test_get_objects_columns_carry_xdbc_types(conn, tables):
    _, names = tables
    objects = (
        conn.adbc_get_objects(
            depth="columns",
            table_name_filter=names["sales"].replace("_", "\\_"),
            column_name_filter="%a%",
        )
        .read_all()
        .to_pylist()
    )
    [catalog] = objects
    assert catalog["catalog_name"] == CATALOG
    schemas = {s["db_schema_name"]: s for s in catalog["catalog_db_schemas"]}
    # The cluster's tables and the system tables (none of them matches).
    assert sorted(schemas) == [SCHEMA, "system"]
    assert not schemas["system"]["db_schema_tables"]
    [table] = schemas[SCHEMA]["db_schema_tables"]
    columns = {c["column_name"]: c for c in table["table_columns"]}
    # The column filter keeps amount, day (and drops id, region).
    assert sorted(columns) == ["amount", "day"]
    amount = columns["amount"]
    assert amount["xdbc_type_name"] == "DECIMAL"
    assert amount["ordinal_position"] == 2
    assert columns["day"]["xdbc_type_name"] == "DATE"


def test_get_table_schema_and_types(conn, tables):
    _, names = tables
    schema = conn.adbc_get_table_schema(names["sales"])
    assert schema.names == ["id", "amount", "region", "day"]
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("day").type == pa.date32()
    assert conn.adbc_get_table_types() == ["SYSTEM TABLE", "TABLE"]


def test_get_info_reports_the_server(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "fsql"
    assert info["vendor_arrow_version"].startswith("58.")
    # SqlInfo 8 (transactions): none, so the driver keeps autocommit.
    assert conn.adbc_connection.get_option("adbc.connection.autocommit") == "true"


def test_transactions_are_refused_not_ignored(coordinator_uri):
    """No transactions yet: a client asking for one is told so, never given a
    transaction that its ROLLBACK would not undo."""
    name = unique("txn")
    # DB-API's default, autocommit=False, cannot be honoured: the driver says so.
    with pytest.warns(Warning, match="Cannot disable autocommit"):
        conn = flightsql.connect(coordinator_uri)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id BIGINT)")
        for sql in ["BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK"]:
            with pytest.raises(adbc_driver_manager.NotSupportedError, match="transactions are not supported"):
                cur.execute(sql)
        cur.execute(f"SELECT count(*) AS n FROM {name}")
        assert cur.fetchone() == (0,)


def test_session_options(coordinator_uri, tables):
    """Sessions live in the `arrow_flight_session_id` cookie: ADBC keeps it only with its
    cookie middleware on."""
    _, names = tables
    cookies = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    with flightsql.connect(coordinator_uri, db_kwargs=cookies) as conn:
        raw = conn.adbc_connection
        options = json.loads(raw.get_option(SESSION + "options"))
        assert options == {"catalog": CATALOG, "schema": SCHEMA, "distributed": True, "direct": True}
        raw.set_options(**{SESSION + "option.catalog": CATALOG, SESSION + "optionbool.distributed": "false"})
        options = json.loads(raw.get_option(SESSION + "options"))
        assert options["distributed"] is False
        # The same answer, computed undistributed.
        sql = f"SELECT region, sum(amount) AS s, count(*) AS n FROM {names['sales']} GROUP BY region ORDER BY region NULLS LAST"
        undistributed = query(conn, sql)
        raw.set_options(**{SESSION + "optionbool.distributed": "true"})
        assert query(conn, sql) == undistributed
        # An unknown catalog or option is refused.
        with pytest.raises(adbc_driver_manager.Error):
            raw.set_options(**{SESSION + "option.catalog": "elsewhere"})
        with pytest.raises(adbc_driver_manager.Error):
            raw.set_options(**{SESSION + "option.colour": "red"})


def test_execute_schema_runs_nothing(conn, tables):
    _, names = tables
    with conn.cursor() as cur:
        schema = cur.adbc_execute_schema(f"SELECT id, amount * 2 AS doubled FROM {names['sales']}")
        assert schema.names == ["id", "doubled"]
        assert pa.types.is_decimal(schema.field("doubled").type)
        # DDL has no result schema: ADBC says so, and nothing was run.
        victim = unique("never")
        with pytest.raises(adbc_driver_manager.NotSupportedError):
            cur.adbc_execute_schema(f"CREATE TABLE {victim} (a INT)")
    assert table_names(conn, table_name_filter=victim) == []


def test_incremental_execution_polls_to_completion(conn, tables):
    _, names = tables
    with conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
        partitions, schema = cur.adbc_execute_partitions(
            f"SELECT id, region FROM {names['sales']} WHERE id <= 3"
        )
        assert schema is None or schema.names == ["id", "region"]
        got = []
        for p in partitions:
            cur.adbc_read_partition(p)
            got.extend(cur.fetchall())
        assert sorted(got) == [(1, "north"), (2, "south"), (3, "north")]


@pytest.mark.parametrize("mode", ["create", "append", "replace", "create_append"])
def test_adbc_ingest_modes(conn, mode):
    name = unique(f"ing_{mode}")
    first = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", None]})
    second = pa.table({"id": pa.array([10, 20], pa.int64()), "v": ["x", "y"]})
    with conn.cursor() as cur:
        if mode in ("append", "replace"):
            cur.adbc_ingest(name, first, mode="create")
        else:
            cur.adbc_ingest(name, first, mode=mode)
        if mode == "create":
            # create on an existing table fails, the table keeps its rows
            with pytest.raises(adbc_driver_manager.Error):
                cur.adbc_ingest(name, second, mode="create")
            expected = [1, 2, 3]
        else:
            cur.adbc_ingest(name, second, mode=mode)
            expected = [10, 20] if mode == "replace" else [1, 2, 3, 10, 20]
    got = query(conn, f"SELECT id FROM {name} ORDER BY id").column("id").to_pylist()
    assert got == expected
    with conn.cursor() as cur:
        if mode == "append":
            # append to a missing table fails
            with pytest.raises(adbc_driver_manager.Error):
                cur.adbc_ingest(unique("missing"), second, mode="append")
