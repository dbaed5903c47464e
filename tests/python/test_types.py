"""Every Arrow type of the mapping in docs/types.md through ADBC: `adbc_ingest` of a
pyarrow table, read back equal, and prepared queries with a parameter of each type
(`cursor.execute("SELECT ... WHERE c = ?", (value,))`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from fsql_helpers import execute, query, rows, unique

UTC = dt.timezone.utc
def MDN(months, days, nanos):
    return pa.MonthDayNano([months, days, nanos])

# name -> (Arrow type, values of rows 1..4: extremes, ordinary, NULL, ...)
COLUMNS = {
    "i8": (pa.int8(), [-128, 127, None, 7]),
    "i16": (pa.int16(), [-32768, 32767, None, -300]),
    "i32": (pa.int32(), [-2**31, 2**31 - 1, None, 123456]),
    "i64": (pa.int64(), [-2**63, 2**63 - 1, None, -1234567890123]),
    "i128": (pa.decimal128(38, 0), [Decimal(-(10**38 - 1)), Decimal(10**38 - 1), None,
                                    Decimal(12345678901234567890123)]),
    "u8": (pa.uint8(), [0, 255, None, 7]),
    "u16": (pa.uint16(), [0, 65535, None, 300]),
    "u32": (pa.uint32(), [0, 2**32 - 1, None, 123456]),
    "u64": (pa.uint64(), [0, 2**64 - 1, None, 12345678901234567890]),
    "f32": (pa.float32(), [-3.5, 1.25, None, 0.5]),
    "f64": (pa.float64(), [-1.5e300, 1.7976931348623157e308, None, 3.141592653589793]),
    "d4": (pa.decimal128(4, 2), [Decimal("-99.99"), Decimal("99.99"), None, Decimal("12.34")]),
    "d18": (pa.decimal128(18, 6), [Decimal("-999999999999.999999"),
                                   Decimal("999999999999.999999"), None, Decimal("-0.000001")]),
    "d38": (pa.decimal128(38, 10), [Decimal("-9999999999999999999999999999.9999999999"),
                                    Decimal("9999999999999999999999999999.9999999999"), None,
                                    Decimal("0.0000000001")]),
    "s": (pa.string(), ["", "ünïcödé ✓ 日本語 🎉", None, "it's"]),
    "b": (pa.binary(), [b"", b"\x00\xff\x10bytes", None, b"abc"]),
    "bo": (pa.bool_(), [False, True, None, True]),
    "dt": (pa.date32(), [dt.date(1900, 1, 1), dt.date(2262, 4, 11), None, dt.date(2024, 2, 29)]),
    "tm": (pa.time64("us"), [dt.time(0, 0), dt.time(23, 59, 59, 999999), None,
                             dt.time(12, 34, 56, 500000)]),
    "ts": (pa.timestamp("us"), [dt.datetime(1901, 12, 13, 20, 45, 52, 123456),
                                dt.datetime(2262, 4, 11, 23, 47, 16, 854775), None,
                                dt.datetime(2024, 2, 29, 12, 34, 56, 789000)]),
    "ts_s": (pa.timestamp("s"), [dt.datetime(1960, 1, 1, 0, 0, 1), dt.datetime(2262, 4, 11),
                                 None, dt.datetime(2024, 2, 29, 12, 34, 56)]),
    "ts_ms": (pa.timestamp("ms"), [dt.datetime(1969, 12, 31, 23, 59, 59, 999000),
                                   dt.datetime(2262, 4, 11, 23, 47, 16, 854000), None,
                                   dt.datetime(2024, 2, 29, 12, 34, 56, 789000)]),
    "ts_ns": (pa.timestamp("ns"), [-1, 2**63 - 1, None, 1709210096000000001]),
    "tz": (pa.timestamp("us", tz="UTC"), [dt.datetime(1950, 6, 1, 12, tzinfo=UTC),
                                          dt.datetime(2100, 1, 1, tzinfo=UTC), None,
                                          dt.datetime(2024, 2, 29, 11, 34, 56, 789000,
                                                      tzinfo=UTC)]),
    "iv": (pa.month_day_nano_interval(), [MDN(0, -1, 0), MDN(14, 3, 14706789000000), None,
                                          MDN(0, 0, 36 * 3600 * 10**9)]),
    "u": (pa.string(), ["00000000-0000-0000-0000-000000000000",
                        "ffffffff-ffff-ffff-ffff-ffffffffffff", None,
                        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    "li": (pa.list_(pa.int32()), [[], [1, None, -2**31], None, [42]]),
    "lv": (pa.list_(pa.string()), [[], ["a", None, "ü", ""], None, ["x"]]),
    "st": (pa.struct([("a", pa.int32()), ("b", pa.string())]),
           [{"a": -1, "b": ""}, {"a": 2**31 - 1, "b": "ü"}, None, {"a": None, "b": None}]),
    "m": (pa.map_(pa.string(), pa.int32()), [[("", 0)], [("k1", 1), ("k2", None)], None,
                                             [("z", -1)]]),
}


def make_table() -> pa.Table:
    arrays = {"id": pa.array([1, 2, 3, 4], pa.int32())}
    for name, (typ, values) in COLUMNS.items():
        arrays[name] = pa.array(values, typ)
    return pa.table(arrays)


@pytest.fixture(scope="module")
def typed_table(coordinator_uri):
    import adbc_driver_flightsql.dbapi as flightsql

    name = unique("types")
    data = make_table()
    with flightsql.connect(coordinator_uri) as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest(name, data, mode="create") in (-1, data.num_rows)
    return name, data


def test_ingest_reads_back_equal(conn, typed_table):
    name, data = typed_table
    got = query(conn, f"SELECT * FROM {name} ORDER BY id")
    assert got.schema.names == data.schema.names
    for field in data.schema:
        assert got.schema.field(field.name).type == field.type, field.name
    assert got.equals(data), (got.to_pylist(), data.to_pylist())
    # Every shard endpoint (direct reads) agrees too.
    got = query(conn, f"SELECT * FROM {name}").sort_by("id")
    assert got.equals(data)


def test_ingest_appends_other_arrow_types(conn, typed_table):
    """Views, large and dictionary types are cast to the table's types."""
    name, data = typed_table
    other = unique("types_cast")
    with conn.cursor() as cur:
        cur.adbc_ingest(other, data, mode="create")
        cast = pa.table({
            **{c: data[c] for c in data.column_names},
            "s": data["s"].cast(pa.large_string()),
            "b": data["b"].cast(pa.large_binary()),
            "lv": data["lv"].cast(pa.large_list(pa.string())),
            "u": data["u"].dictionary_encode(),
        })
        cur.adbc_ingest(other, cast, mode="append")
    got = query(conn, f"SELECT * FROM {other} ORDER BY id")
    assert got.num_rows == 8
    assert got.schema == query(conn, f"SELECT * FROM {name}").schema


def python_values():
    """Row 2's values as plain Python objects (what applications bind)."""
    return {name: values[1] for name, (_, values) in COLUMNS.items()}


@pytest.mark.parametrize("column", [c for c in COLUMNS if c != "m"])
def test_parameter_of_each_type(conn, typed_table, column):
    name, data = typed_table
    value = python_values()[column]
    if column == "u64":
        value = pa.scalar(value, pa.uint64())  # beyond int64: say it is unsigned
    elif column == "ts_ns":
        value = pa.scalar(value, pa.timestamp("ns"))
    elif column == "iv":
        value = pa.scalar(value, pa.month_day_nano_interval())
    elif column in ("li", "lv", "st"):
        value = pa.scalar(value, COLUMNS[column][0])
    got = query(conn, f"SELECT id FROM {name} WHERE {column} = ? ORDER BY id", (value,))
    assert rows(got) == expected_ids(column), column


def expected_ids(column):
    # Row 4 shares row 2's BOOLEAN value.
    return [(2,), (4,)] if column == "bo" else [(2,)]


@pytest.mark.parametrize("column", [c for c in COLUMNS if c != "m"])
def test_parameter_of_each_arrow_type(conn, typed_table, column):
    """The exact Arrow type of the column, bound as a one-row batch."""
    name, data = typed_table
    typ = COLUMNS[column][0]
    param = pa.record_batch([data[column].chunk(0).slice(1, 1) if data[column].num_chunks == 1
                             else data[column].combine_chunks().slice(1, 1)], names=["p"])
    assert param.schema.field(0).type == typ
    sql = f"SELECT id FROM {name} WHERE {column} = ?"
    with conn.cursor() as cur:
        cur.execute(sql, param)
        got = cur.fetch_arrow_table()
    assert sorted(rows(got)) == expected_ids(column), column


def test_parameters_of_every_type_in_insert(conn, typed_table):
    """Maps have no `=`; every type (maps included) binds as an INSERT parameter."""
    name, data = typed_table
    copy = unique("types_params")
    with conn.cursor() as cur:
        cur.adbc_ingest(copy, data.slice(0, 1), mode="create")
        marks = ", ".join("?" for _ in data.column_names)
        cur.execute(f"INSERT INTO {copy} VALUES ({marks})", data.to_batches()[0])
    got = query(conn, f"SELECT * FROM {copy} ORDER BY id")
    expected = pa.concat_tables([data.slice(0, 1), data])
    assert got.equals(expected), (got.to_pylist(), expected.to_pylist())


def test_strings_for_dates_and_ints_for_small_columns(conn, typed_table):
    """ADBC sends Python ints as int64 and strings as they are: both are cast."""
    name, _ = typed_table
    assert rows(query(conn, f"SELECT id FROM {name} WHERE i8 = ?", (127,))) == [(2,)]
    assert rows(query(conn, f"SELECT id FROM {name} WHERE dt = ?", ("2262-04-11",))) == [(2,)]
    assert rows(query(conn, f"SELECT id FROM {name} WHERE d4 = ?", ("99.99",))) == [(2,)]
    assert rows(query(conn, f"SELECT id FROM {name} WHERE u = ?",
                      ("ffffffff-ffff-ffff-ffff-ffffffffffff",))) == [(2,)]
    with pytest.raises(Exception, match="cannot be bound|INVALID_ARGUMENT|InvalidArgument"):
        query(conn, f"SELECT id FROM {name} WHERE i8 = ?", (1000,))


def test_prepared_parameter_schema(conn, typed_table):
    name, _ = typed_table
    with conn.cursor() as cur:
        cur.adbc_prepare(f"SELECT id FROM {name} WHERE i16 = ? AND s = ? AND dt = ?")
        schema = pa.schema(cur.adbc_statement.get_parameter_schema())
    assert len(schema) == 3
    assert all(f.nullable for f in schema)
    assert [f.type for f in schema] == [pa.int16(), pa.string(), pa.date32()]


def test_duckdb_spelled_table_reads_as_documented(conn):
    name = unique("ddl_types")
    execute(conn, f"CREATE TABLE {name} (h HUGEINT, u UUID, m MAP(VARCHAR, INTEGER), "
                  f"s STRUCT(a INT, b VARCHAR), tz TIMESTAMPTZ, iv INTERVAL, l INTEGER[]) "
                  f"WITH (distribution = 'hash(u)')")
    execute(conn, f"INSERT INTO {name} VALUES (12345678901234567890123, "
                  f"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', MAP {{'k': 1}}, "
                  f"{{'a': 1, 'b': 'x'}}, '2024-01-01 00:00:00+00', INTERVAL '1 day', [1, 2])")
    got = query(conn, f"SELECT * FROM {name}")
    assert got.schema.field("h").type == pa.decimal128(38, 0)
    assert got.schema.field("u").type == pa.string()
    assert got.schema.field("m").type == pa.map_(pa.string(), pa.int32())
    assert got.schema.field("tz").type == pa.timestamp("us", tz="UTC")
    assert got.schema.field("iv").type == pa.month_day_nano_interval()
    row = got.to_pylist()[0]
    assert row["h"] == Decimal(12345678901234567890123)
    assert row["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["m"] == [("k", 1)]
    assert row["s"] == {"a": 1, "b": "x"}
    assert row["tz"] == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert row["iv"] == MDN(0, 1, 0)
    assert row["l"] == [1, 2]
