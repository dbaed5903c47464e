"""Helpers shared by the Python client tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import uuid

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight

CATALOG = "fsql"
SCHEMA = "public"

# Locations meaning "fetch from the server you asked" (Flight SQL spec).
REUSE_CONNECTION = "arrow-flight-reuse-connection://?"


def unique(prefix: str) -> str:
    """A table name no other test uses: the clusters are shared by the whole session."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def query(conn, sql: str, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        return cur.fetch_arrow_table()


def execute(conn, sql: str, parameters=None) -> None:
    """Run a statement (DDL, INSERT) and drain whatever result it returns."""
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        cur.fetch_arrow_table()


def rows(table: pa.Table) -> list[tuple]:
    """The table's rows as tuples, in the order they came."""
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns))


def sorted_rows(table: pa.Table) -> list[tuple]:
    """The table's rows as tuples, sorted (None first) for order-insensitive comparison."""
    return sorted(rows(table), key=_sort_key)


def _sort_key(row: tuple):
    return tuple((v is not None, v) for v in row)


def status_of(exc: BaseException) -> adbc_driver_manager.AdbcStatusCode | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        return None
    try:
        return adbc_driver_manager.AdbcStatusCode(code)
    except ValueError:
        return code


# ---------------------------------------------------------------------------
# Flight SQL commands encoded by hand (protobuf wire format), so that the tests
# need no generated protobuf module.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def pack_any(type_name: str, message: bytes) -> bytes:
    """google.protobuf.Any { type_url = 1; value = 2 }."""
    type_url = f"type.googleapis.com/{type_name}".encode()
    return _length_delimited(1, type_url) + _length_delimited(2, message)


def command_statement_query(sql: str) -> bytes:
    """Any(CommandStatementQuery { query = 1 })."""
    return pack_any(
        "arrow.flight.protocol.sql.CommandStatementQuery",
        _length_delimited(1, sql.encode()),
    )


def flight_info(
    client: flight.FlightClient, sql: str, options: flight.FlightCallOptions | None = None
) -> flight.FlightInfo:
    descriptor = flight.FlightDescriptor.for_command(command_statement_query(sql))
    return client.get_flight_info(descriptor, options)


def endpoint_uris(endpoint: flight.FlightEndpoint) -> list[str]:
    return [loc.uri.decode() for loc in endpoint.locations]


def is_reuse(uris: list[str]) -> bool:
    return not uris or all(u.startswith(REUSE_CONNECTION.rstrip("?")) for u in uris)


class Fetcher:
    """Fetches Flight endpoints, connecting to each location once."""

    def __init__(self, client: flight.FlightClient):
        self.client = client
        self._clients: dict[str, flight.FlightClient] = {}

    def client_for(self, endpoint: flight.FlightEndpoint) -> flight.FlightClient:
        uris = endpoint_uris(endpoint)
        if is_reuse(uris):
            return self.client
        uri = uris[0]
        if uri not in self._clients:
            self._clients[uri] = flight.FlightClient(uri)
        return self._clients[uri]

    def fetch(self, endpoint: flight.FlightEndpoint) -> pa.Table:
        return self.client_for(endpoint).do_get(endpoint.ticket).read_all()

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
