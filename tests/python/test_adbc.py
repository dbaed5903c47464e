"""The cluster through the ADBC Flight SQL driver (what Python and R BI tooling uses).

Note: the ADBC DB-API cursor prepares every statement (CreatePreparedStatement) before it
executes it, also DDL and INSERT without parameters; `adbc_ingest` is CommandStatementIngest.
"""

from __future__ import annotations

import random
from decimal import Decimal

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from fsql_helpers import CATALOG, SCHEMA, execute, query, rows, sorted_rows, status_of, unique

Status = adbc_driver_manager.AdbcStatusCode


def make_hash_table(conn, name: str, shards: int = 4) -> None:
    execute(
        conn,
        f"CREATE TABLE {name} (a BIGINT, b VARCHAR) "
        f"WITH (distribution = 'hash(a)', shards = {shards})",
    )


def values_sql(pairs) -> str:
    def lit(v):
        if v is None:
            return "NULL"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return str(v)

    return ", ".join("(" + ", ".join(lit(v) for v in row) + ")" for row in pairs)


def trunc_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as in PostgreSQL."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# ---------------------------------------------------------------------------
# DDL, INSERT, SELECT


def test_select_constant(conn):
    table = query(conn, "SELECT 1 AS one, 'x' AS s")
    assert table.column_names == ["one", "s"]
    assert rows(table) == [(1, "x")]


@pytest.mark.parametrize(
    "with_clause",
    [
        "WITH (distribution = 'hash(a)', shards = 4)",
        "WITH (distribution = 'round_robin', shards = 3)",
        "WITH (distribution = 'reference')",
        "",
    ],
    ids=["hash4", "round_robin3", "reference", "default"],
)
def test_create_insert_select(conn, with_clause):
    name = unique("t_basic")
    execute(conn, f"CREATE TABLE {name} (a BIGINT, b VARCHAR) {with_clause}")
    data = [(i, f"v{i % 7}" if i % 5 else None) for i in range(-20, 80)]
    execute(conn, f"INSERT INTO {name} VALUES {values_sql(data)}")
    table = query(conn, f"SELECT a, b FROM {name}")
    assert table.column_names == ["a", "b"]
    assert sorted_rows(table) == sorted(data, key=lambda r: r[0])
    count = query(conn, f"SELECT COUNT(*) AS n FROM {name}")
    assert rows(count) == [(len(data),)]


def test_table_visible_from_another_connection(conn, coordinator_uri):
    name = unique("t_shared")
    make_hash_table(conn, name)
    execute(conn, f"INSERT INTO {name} VALUES (1, 'x'), (2, 'y')")
    with flightsql.connect(coordinator_uri) as other:
        assert sorted_rows(query(other, f"SELECT a, b FROM {name}")) == [(1, "x"), (2, "y")]


def test_empty_result_keeps_schema(conn):
    name = unique("t_empty")
    make_hash_table(conn, name)
    execute(conn, f"INSERT INTO {name} VALUES (1, 'x')")
    table = query(conn, f"SELECT a, b FROM {name} WHERE a > 100")
    assert table.num_rows == 0
    assert table.column_names == ["a", "b"]
    assert table.schema.field("a").type == pa.int64()


def test_result_types_are_plain_arrow_types(conn):
    # BI clients (the Flight SQL JDBC driver) read what the FlightInfo schema says: a
    # VARCHAR column should come back as utf8 and a BIGINT as int64.
    name = unique("t_types")
    make_hash_table(conn, name)
    execute(conn, f"INSERT INTO {name} VALUES (1, 'x')")
    table = query(conn, f"SELECT a, b FROM {name}")
    assert table.schema.field("a").type == pa.int64()
    assert table.schema.field("b").type == pa.string()


def test_insert_select_and_create_table_as(conn):
    src = unique("t_src")
    make_hash_table(conn, src)
    data = [(i, f"s{i % 3}") for i in range(200)]
    execute(conn, f"INSERT INTO {src} VALUES {values_sql(data)}")

    dst = unique("t_dst")
    execute(conn, f"CREATE TABLE {dst} (a BIGINT, b VARCHAR) WITH (distribution = 'round_robin', shards = 3)")
    execute(conn, f"INSERT INTO {dst} SELECT a * 10, b FROM {src} WHERE a % 2 = 0")
    expected = [(a * 10, b) for a, b in data if a % 2 == 0]
    assert sorted_rows(query(conn, f"SELECT a, b FROM {dst}")) == expected

    ctas = unique("t_ctas")
    execute(
        conn,
        f"CREATE TABLE {ctas} WITH (distribution = 'hash(a)', shards = 2) AS "
        f"SELECT a, b FROM {src} WHERE b = 's1'",
    )
    expected = [(a, b) for a, b in data if b == "s1"]
    assert sorted_rows(query(conn, f"SELECT a, b FROM {ctas}")) == expected


def test_drop_table(conn):
    name = unique("t_drop")
    make_hash_table(conn, name)
    execute(conn, f"INSERT INTO {name} VALUES (1, 'x')")
    execute(conn, f"DROP TABLE {name}")
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        query(conn, f"SELECT * FROM {name}")
    assert status_of(err.value) == Status.NOT_FOUND, err.value
    execute(conn, f"DROP TABLE IF EXISTS {name}")
    # The name can be used again, and the new table starts empty.
    make_hash_table(conn, name)
    assert rows(query(conn, f"SELECT COUNT(*) FROM {name}")) == [(0,)]


# ---------------------------------------------------------------------------
# Parameters


@pytest.fixture
def param_table(conn):
    name = unique("t_param")
    make_hash_table(conn, name)
    data = [(i, f"p{i}") for i in range(1, 21)]
    execute(conn, f"INSERT INTO {name} VALUES {values_sql(data)}")
    return name


def test_parameter_question_mark(conn, param_table):
    table = query(conn, f"SELECT a, b FROM {param_table} WHERE a = ?", parameters=(5,))
    assert rows(table) == [(5, "p5")]
    # The same prepared statement with another value.
    with conn.cursor() as cur:
        sql = f"SELECT a, b FROM {param_table} WHERE a = ?"
        cur.execute(sql, parameters=(5,))
        assert rows(cur.fetch_arrow_table()) == [(5, "p5")]
        cur.execute(sql, parameters=(17,))
        assert rows(cur.fetch_arrow_table()) == [(17, "p17")]


def test_parameter_dollar_and_several(conn, param_table):
    table = query(
        conn,
        f"SELECT a, b FROM {param_table} WHERE a >= $1 AND b <> $2 ORDER BY a",
        parameters=(15, "p16"),
    )
    assert rows(table) == [(15, "p15"), (17, "p17"), (18, "p18"), (19, "p19"), (20, "p20")]


def test_executemany_insert(conn):
    name = unique("t_many")
    make_hash_table(conn, name)
    data = [(i, None if i % 4 == 0 else f"m{i}") for i in range(100)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", data)
    assert sorted_rows(query(conn, f"SELECT a, b FROM {name}")) == data


# ---------------------------------------------------------------------------
# Bulk ingest (CommandStatementIngest)


def test_ingest_create_then_append(conn):
    name = unique("t_ingest")
    first = pa.table(
        {
            "id": pa.array(range(500), pa.int64()),
            "name": pa.array([None if i % 9 == 0 else f"n{i}" for i in range(500)], pa.string()),
            "x": pa.array([i / 8 for i in range(500)], pa.float64()),
        }
    )
    second = pa.table(
        {
            "id": pa.array(range(500, 800), pa.int64()),
            "name": pa.array([f"n{i}" for i in range(500, 800)], pa.string()),
            "x": pa.array([-i / 4 for i in range(500, 800)], pa.float64()),
        }
    )
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, first, mode="create") in (-1, first.num_rows)
        assert cur.adbc_ingest(name, second, mode="append") in (-1, second.num_rows)

    back = query(conn, f"SELECT id, name, x FROM {name} ORDER BY id")
    expected = pa.concat_tables([first, second])
    assert back.column_names == ["id", "name", "x"]
    assert rows(back) == rows(expected)


def test_ingest_append_into_hash_distributed_table(conn):
    name = unique("t_ingest_hash")
    make_hash_table(conn, name, shards=4)
    rng = random.Random(7)
    keys = [rng.randrange(-10**12, 10**12) for _ in range(3000)]
    data = pa.table(
        {
            "a": pa.array(keys, pa.int64()),
            "b": pa.array([f"k{k % 97}" for k in keys], pa.string()),
        }
    )
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="append")
        cur.adbc_ingest(name, data.slice(0, 10), mode="append")  # duplicates are rows too
    back = query(conn, f"SELECT a, b FROM {name}")
    expected = pa.concat_tables([data, data.slice(0, 10)])
    assert sorted_rows(back) == sorted_rows(expected)
    # Point lookups land on the right shard.
    for k in keys[:5]:
        got = query(conn, f"SELECT a, b FROM {name} WHERE a = ?", parameters=(k,))
        assert rows(got) == [(k, f"k{k % 97}")] * (keys.count(k) + keys[:10].count(k))


def test_ingest_common_types_roundtrip(conn):
    name = unique("t_ingest_types")
    data = pa.table(
        {
            "i32": pa.array([1, None, -3], pa.int32()),
            "i64": pa.array([2**40, -(2**40), None], pa.int64()),
            "f64": pa.array([1.5, None, -0.25], pa.float64()),
            "flag": pa.array([True, False, None], pa.bool_()),
            "s": pa.array(["a", "", None], pa.string()),
            "d": pa.array([19000, None, 0], pa.date32()),
            "ts": pa.array([1_700_000_000_000_000, None, 0], pa.timestamp("us")),
            "amount": pa.array([Decimal("12.34"), None, Decimal("-0.01")], pa.decimal128(12, 2)),
        }
    )
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="create")
    back = query(conn, f"SELECT * FROM {name} ORDER BY f64 NULLS LAST")
    expected = data.take([2, 0, 1])  # ordered by f64: -0.25, 1.5, NULL
    assert back.schema.names == data.schema.names
    for field in data.schema:
        assert back.schema.field(field.name).type == field.type, field.name
    assert rows(back) == rows(expected)


# ---------------------------------------------------------------------------
# Metadata


def test_get_objects_lists_catalog_schema_table_columns(conn):
    name = unique("t_meta")
    make_hash_table(conn, name)
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    assert CATALOG in catalogs, catalogs.keys()
    schemas = {s["db_schema_name"]: s for s in catalogs[CATALOG]["catalog_db_schemas"] or []}
    assert SCHEMA in schemas, schemas.keys()
    tables = {t["table_name"]: t for t in schemas[SCHEMA]["db_schema_tables"] or []}
    assert name in tables, sorted(tables)
    table = tables[name]
    assert table["table_type"] in conn.adbc_get_table_types()
    columns = sorted(table["table_columns"] or [], key=lambda c: c["ordinal_position"])
    assert [c["column_name"] for c in columns] == ["a", "b"]
    assert [c["ordinal_position"] for c in columns] == [1, 2]


def test_get_objects_filters(conn):
    name = unique("t_filter")
    make_hash_table(conn, name)
    objects = (
        conn.adbc_get_objects(
            depth="tables", catalog_filter=CATALOG, db_schema_filter=SCHEMA, table_name_filter=name
        )
        .read_all()
        .to_pylist()
    )
    names = [
        t["table_name"]
        for c in objects
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    ]
    assert names == [name]


def test_get_table_schema(conn):
    name = unique("t_schema")
    make_hash_table(conn, name)
    expected = pa.schema([("a", pa.int64()), ("b", pa.string())])
    schema = conn.adbc_get_table_schema(name, catalog_filter=CATALOG, db_schema_filter=SCHEMA)
    assert schema.equals(expected), schema
    assert conn.adbc_get_table_schema(name).equals(expected)


def test_get_table_types(conn):
    types = conn.adbc_get_table_types()
    assert "TABLE" in types, types


def test_get_info(conn):
    info = conn.adbc_get_info()
    assert isinstance(info.get("vendor_name"), str) and info["vendor_name"], info
    assert isinstance(info.get("vendor_version"), str) and info["vendor_version"], info
    assert info.get("driver_name"), info


# ---------------------------------------------------------------------------
# Exact answers from distributed execution


@pytest.fixture(scope="module")
def agg_data(coordinator_uri):
    """A hash-distributed table whose shards hold very different numbers of rows."""
    rng = random.Random(42)
    data = []
    for i in range(3000):
        # Skewed keys: many rows on a few keys, so shard sizes differ (AVG of AVGs would show).
        a = rng.choice([1, 2, 3]) if i % 3 else rng.randrange(-(10**9), 10**9)
        b = f"g{rng.randrange(0, 25)}"
        c = rng.randrange(-1000, 1000)
        data.append((a, b, c))
    name = unique("t_agg")
    with flightsql.connect(coordinator_uri) as c:
        execute(
            c,
            f"CREATE TABLE {name} (a BIGINT, b VARCHAR, c BIGINT) "
            f"WITH (distribution = 'hash(a)', shards = 4)",
        )
        with c.cursor() as cur:
            cur.adbc_ingest(
                name,
                pa.table(
                    {
                        "a": pa.array([r[0] for r in data], pa.int64()),
                        "b": pa.array([r[1] for r in data], pa.string()),
                        "c": pa.array([r[2] for r in data], pa.int64()),
                    }
                ),
                mode="append",
            )
    return name, data


def test_global_aggregates_exact(conn, agg_data):
    name, data = agg_data
    table = query(
        conn,
        f"SELECT COUNT(*) AS n, SUM(c) AS s, AVG(c) AS av, MIN(a) AS lo, MAX(a) AS hi, "
        f"COUNT(DISTINCT b) AS nb, COUNT(DISTINCT a) AS na FROM {name}",
    )
    cs = [r[2] for r in data]
    expected = {
        "n": len(data),
        "s": sum(cs),
        "av": sum(cs) / len(cs),
        "lo": min(r[0] for r in data),
        "hi": max(r[0] for r in data),
        "nb": len({r[1] for r in data}),
        "na": len({r[0] for r in data}),
    }
    assert table.to_pylist() == [expected]


def test_group_by_aggregates_exact(conn, agg_data):
    name, data = agg_data
    table = query(
        conn,
        f"SELECT b, COUNT(*) AS n, SUM(c) AS s, AVG(c) AS av, COUNT(DISTINCT a) AS na "
        f"FROM {name} GROUP BY b ORDER BY b",
    )
    groups: dict[str, list[tuple]] = {}
    for r in data:
        groups.setdefault(r[1], []).append(r)
    expected = [
        {
            "b": b,
            "n": len(g),
            "s": sum(r[2] for r in g),
            "av": sum(r[2] for r in g) / len(g),
            "na": len({r[0] for r in g}),
        }
        for b, g in sorted(groups.items())
    ]
    assert table.to_pylist() == expected


def test_group_by_distribution_key_with_having(conn, agg_data):
    name, data = agg_data
    table = query(
        conn,
        f"SELECT a, COUNT(*) AS n FROM {name} GROUP BY a HAVING COUNT(*) > 1 ORDER BY a",
    )
    counts: dict[int, int] = {}
    for r in data:
        counts[r[0]] = counts.get(r[0], 0) + 1
    assert rows(table) == sorted((a, n) for a, n in counts.items() if n > 1)


def test_order_by_limit(conn, agg_data):
    name, data = agg_data
    table = query(conn, f"SELECT a, b, c FROM {name} ORDER BY c DESC, a, b LIMIT 7")
    expected = sorted(data, key=lambda r: (-r[2], r[0], r[1]))[:7]
    assert rows(table) == expected

    table = query(conn, f"SELECT c FROM {name} ORDER BY c LIMIT 5 OFFSET 10")
    assert [r[0] for r in rows(table)] == sorted(r[2] for r in data)[10:15]


def test_integer_division_truncates(conn, agg_data):
    assert rows(query(conn, "SELECT 7 / 2 AS p, -7 / 2 AS q, 7 % -2 AS r")) == [(3, -3, 1)]
    name, data = agg_data
    table = query(conn, f"SELECT c, c / 7 AS q FROM {name} WHERE c < 0 ORDER BY c LIMIT 50")
    for c, q in rows(table):
        assert q == trunc_div(c, 7), (c, q)


def test_explain_shows_shard_fragments(conn, agg_data):
    name, _ = agg_data
    table = query(conn, f"EXPLAIN SELECT b, SUM(c) FROM {name} GROUP BY b")
    assert table.num_rows > 0
    text = "\n".join(
        str(v) for col in table.columns for v in col.to_pylist() if v is not None
    ).lower()
    assert "shard" in text, text


def test_colocated_and_reference_joins_exact(conn3):
    orders, items, regions = unique("t_orders"), unique("t_items"), unique("t_regions")
    execute(conn3, f"CREATE TABLE {orders} (id BIGINT, region BIGINT) WITH (distribution = 'hash(id)', shards = 6)")
    execute(conn3, f"CREATE TABLE {items} (order_id BIGINT, qty BIGINT) WITH (distribution = 'hash(order_id)', shards = 6)")
    execute(conn3, f"CREATE TABLE {regions} (id BIGINT, name VARCHAR) WITH (distribution = 'reference')")
    order_rows = [(i, i % 4) for i in range(400)]
    item_rows = [(i % 450, (i * 7) % 13) for i in range(1500)]  # some items have no order
    region_rows = [(0, "north"), (1, "south"), (2, "east")]  # region 3 has no name
    execute(conn3, f"INSERT INTO {orders} VALUES {values_sql(order_rows)}")
    execute(conn3, f"INSERT INTO {items} VALUES {values_sql(item_rows)}")
    execute(conn3, f"INSERT INTO {regions} VALUES {values_sql(region_rows)}")

    table = query(
        conn3,
        f"SELECT r.name, COUNT(*) AS n, SUM(i.qty) AS q "
        f"FROM {orders} o JOIN {items} i ON o.id = i.order_id JOIN {regions} r ON o.region = r.id "
        f"GROUP BY r.name ORDER BY r.name",
    )
    region_name = dict(region_rows)
    order_region = dict(order_rows)
    acc: dict[str, list[int]] = {}
    for order_id, qty in item_rows:
        if order_id in order_region and order_region[order_id] in region_name:
            acc.setdefault(region_name[order_region[order_id]], []).append(qty)
    expected = [(n, len(q), sum(q)) for n, q in sorted(acc.items())]
    assert rows(table) == expected


def test_reference_table_rows_once(conn3):
    name = unique("t_ref")
    execute(conn3, f"CREATE TABLE {name} (a BIGINT, b VARCHAR) WITH (distribution = 'reference')")
    data = [(i, f"r{i}") for i in range(50)]
    execute(conn3, f"INSERT INTO {name} VALUES {values_sql(data)}")
    assert sorted_rows(query(conn3, f"SELECT a, b FROM {name}")) == data
    assert rows(query(conn3, f"SELECT COUNT(*), SUM(a) FROM {name}")) == [(50, sum(range(50)))]


# ---------------------------------------------------------------------------
# Errors


def test_malformed_sql_is_invalid_argument(conn):
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        query(conn, "SELEC 1 FRM nowhere")
    assert status_of(err.value) == Status.INVALID_ARGUMENT, err.value
    assert rows(query(conn, "SELECT 2 AS two")) == [(2,)]


def test_unknown_table_is_not_found(conn):
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        query(conn, f"SELECT * FROM {unique('no_such_table')}")
    assert status_of(err.value) == Status.NOT_FOUND, err.value
    assert rows(query(conn, "SELECT 3 AS three")) == [(3,)]


def test_create_with_bad_options_is_invalid_argument(conn):
    name = unique("t_badopt")
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        execute(conn, f"CREATE TABLE {name} (a BIGINT) WITH (distribution = 'hash(nope)', shards = 4)")
    # A user error (the column named by the distribution does not exist), not INTERNAL.
    assert status_of(err.value) in (Status.INVALID_ARGUMENT, Status.NOT_FOUND), err.value
    assert rows(query(conn, "SELECT 4 AS four")) == [(4,)]


def test_insert_into_unknown_table_is_not_found(conn):
    with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
        execute(conn, f"INSERT INTO {unique('no_such_table')} VALUES (1)")
    assert status_of(err.value) == Status.NOT_FOUND, err.value
    assert rows(query(conn, "SELECT 5 AS five")) == [(5,)]


# ---------------------------------------------------------------------------
# The demo data


def test_demo_tpch_tables(coordinator_uri_tpch):
    expected_counts = {
        "region": 5,
        "nation": 25,
        "supplier": 100,
        "customer": 1500,
        "part": 2000,
        "partsupp": 8000,
        "orders": 15000,
    }
    with flightsql.connect(coordinator_uri_tpch) as c:
        for table, n in expected_counts.items():
            assert rows(query(c, f"SELECT COUNT(*) FROM {table}")) == [(n,)], table
        assert rows(query(c, "SELECT COUNT(*) FROM lineitem"))[0][0] > 50_000
        # Every line item belongs to an order (a join across two distributed tables).
        orphans = query(
            c,
            "SELECT COUNT(*) FROM lineitem l LEFT JOIN orders o ON l.l_orderkey = o.o_orderkey "
            "WHERE o.o_orderkey IS NULL",
        )
        assert rows(orphans) == [(0,)]
