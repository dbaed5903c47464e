"""Authentication and TLS with real clients: ADBC and pyarrow.flight.

The `secure_cluster` fixture is `flight-coordinator local --config fsql.toml` with TLS
(a trustme CA) and one user whose argon2 hash comes from `flight-coordinator
hash-password`. Clients authenticate with Basic credentials (ADBC `username`/`password`,
pyarrow `authenticate_basic_token`), get a bearer token in the `authorization` response
header, and read every endpoint, including those at the workers, over TLS.
"""

from __future__ import annotations

import subprocess

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import binary
from fsql_helpers import endpoint_uris, execute, flight_info, is_reuse, query, unique

N_ROWS = 1000


def adbc_connect(cluster, password=None, **extra):
    db_kwargs = {
        adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: cluster["ca"].decode(),
        "username": cluster["user"],
        "password": cluster["password"] if password is None else password,
        **extra,
    }
    return flightsql.connect(cluster["uri"], db_kwargs=db_kwargs)


def test_cluster_says_it_runs_tls_and_auth(secure_cluster):
    assert secure_cluster["uri"].startswith("grpc+tls://")
    assert any(line.startswith("auth: on") for line in secure_cluster["stdout"])
    assert "tls: on" in secure_cluster["stdout"]


def test_adbc_username_password_over_tls(secure_cluster):
    table = unique("auth_adbc")
    with adbc_connect(secure_cluster) as conn:
        execute(
            conn,
            f"CREATE TABLE {table} (id BIGINT, v VARCHAR) "
            "WITH (distribution = 'hash(id)', shards = 4)",
        )
        values = ", ".join(f"({i}, 'v{i}')" for i in range(N_ROWS))
        execute(conn, f"INSERT INTO {table} VALUES {values}")
        # A plain scan: the driver reads the shards from the workers, over TLS, after
        # authenticating there too.
        result = query(conn, f"SELECT id FROM {table}")
        assert result.num_rows == N_ROWS
        assert sum(result.column("id").to_pylist()) == sum(range(N_ROWS))
        result = query(conn, f"SELECT count(*) AS n FROM {table}")
        assert result.column("n").to_pylist() == [N_ROWS]


def test_separate_processes_from_one_config_file(secure_serve_cluster):
    """`flight-worker --config` and `serve --config`: TLS everywhere, users at the workers."""
    cluster = secure_serve_cluster
    assert cluster["uri"].startswith("grpc+tls://")
    assert all(u.startswith("grpc+tls://") for u in cluster["workers"])
    table = unique("auth_serve")
    with adbc_connect(cluster) as conn:
        execute(conn, f"CREATE TABLE {table} (id BIGINT) WITH (distribution = 'hash(id)', shards = 4)")
        execute(conn, f"INSERT INTO {table} VALUES " + ", ".join(f"({i})" for i in range(N_ROWS)))
        result = query(conn, f"SELECT id FROM {table}")
        assert sorted(result.column("id").to_pylist()) == list(range(N_ROWS))
    # pyarrow: every endpoint is at a TLS worker; the token works there.
    client = _tls_client(cluster["uri"], cluster["ca"])
    header = client.authenticate_basic_token(cluster["user"], cluster["password"])
    options = flight.FlightCallOptions(headers=[header])
    info = flight_info(client, f"SELECT id FROM {table}", options)
    total = 0
    for endpoint in info.endpoints:
        uris = endpoint_uris(endpoint)
        assert uris and all(u.startswith("grpc+tls://") for u in uris), uris
        with _tls_client(uris[0], cluster["ca"]) as worker:
            total += worker.do_get(endpoint.ticket, options).read_all().num_rows
    assert total == N_ROWS
    # A worker checks passwords from the same file.
    with _tls_client(cluster["workers"][0], cluster["ca"]) as worker:
        with pytest.raises(flight.FlightUnauthenticatedError):
            worker.authenticate_basic_token(cluster["user"], "wrong")
        assert worker.authenticate_basic_token(cluster["user"], cluster["password"])[0] == (
            b"authorization"
        )
    client.close()


def test_adbc_wrong_password_is_refused(secure_cluster):
    with pytest.raises(adbc_driver_manager.Error) as info:
        with adbc_connect(secure_cluster, password="not the password") as conn:
            query(conn, "SELECT 1")
    assert "invalid credentials" in str(info.value) or "nauthenticated" in str(info.value)
    # The server keeps serving.
    with adbc_connect(secure_cluster) as conn:
        assert query(conn, "SELECT 1 AS x").column("x").to_pylist() == [1]


def test_adbc_without_credentials_is_refused(secure_cluster):
    db_kwargs = {
        adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: secure_cluster["ca"].decode()
    }
    with pytest.raises(adbc_driver_manager.Error):
        with flightsql.connect(secure_cluster["uri"], db_kwargs=db_kwargs) as conn:
            query(conn, "SELECT 1")


def _tls_client(uri: str, ca: bytes) -> flight.FlightClient:
    return flight.FlightClient(uri, tls_root_certs=ca)


def test_pyarrow_basic_token_and_every_endpoint(secure_cluster):
    ca = secure_cluster["ca"]
    table = unique("auth_pyarrow")
    with adbc_connect(secure_cluster) as conn:
        execute(
            conn,
            f"CREATE TABLE {table} (id BIGINT) WITH (distribution = 'hash(id)', shards = 3)",
        )
        values = ", ".join(f"({i})" for i in range(N_ROWS))
        execute(conn, f"INSERT INTO {table} VALUES {values}")

    client = _tls_client(secure_cluster["uri"], ca)
    header = client.authenticate_basic_token(secure_cluster["user"], secure_cluster["password"])
    assert header[0] == b"authorization"
    assert header[1].startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[header])

    info = flight_info(client, f"SELECT id FROM {table}", options)
    tables = []
    locations = []
    for endpoint in info.endpoints:
        uris = endpoint_uris(endpoint)
        if is_reuse(uris):
            reader = client.do_get(endpoint.ticket, options)
        else:
            locations.extend(uris)
            # Each location with the same call options (the bearer header).
            with _tls_client(uris[0], ca) as worker:
                reader = worker.do_get(endpoint.ticket, options)
                tables.append(reader.read_all())
                continue
        tables.append(reader.read_all())
    assert locations, "a plain scan is read from the workers"
    assert all(u.startswith("grpc+tls://") for u in locations), locations
    result = pa.concat_tables(tables)
    assert result.num_rows == N_ROWS
    assert sum(result.column("id").to_pylist()) == sum(range(N_ROWS))

    # Without the token the worker still refuses a forged header.
    forged = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer forged")])
    endpoint = next(e for e in info.endpoints if not is_reuse(endpoint_uris(e)))
    with _tls_client(endpoint_uris(endpoint)[0], ca) as worker:
        with pytest.raises(flight.FlightUnauthenticatedError):
            worker.do_get(endpoint.ticket, forged).read_all()
    client.close()


def test_pyarrow_refusals(secure_cluster):
    ca = secure_cluster["ca"]
    client = _tls_client(secure_cluster["uri"], ca)
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token(secure_cluster["user"], "wrong")
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("mallory", secure_cluster["password"])
    with pytest.raises(flight.FlightUnauthenticatedError):
        flight_info(client, "SELECT 1")
    forged = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer Zm9yZ2Vk")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        flight_info(client, "SELECT 1", forged)
    # Still serving.
    header = client.authenticate_basic_token(secure_cluster["user"], secure_cluster["password"])
    info = flight_info(client, "SELECT 1 AS x", flight.FlightCallOptions(headers=[header]))
    assert info.schema.names == ["x"]
    client.close()


def test_plaintext_to_tls_port_fails(secure_cluster):
    plain = secure_cluster["uri"].replace("grpc+tls://", "grpc://")
    client = flight.FlightClient(plain)
    with pytest.raises((flight.FlightError, pa.ArrowException)):
        client.authenticate_basic_token(secure_cluster["user"], secure_cluster["password"])
    client.close()
    # The server keeps serving TLS clients.
    with adbc_connect(secure_cluster) as conn:
        assert query(conn, "SELECT 2 AS x").column("x").to_pylist() == [2]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_local_without_users_refuses_a_public_address(tmp_path):
    result = _run("local", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "loopback" in result.stderr


def test_serve_without_users_needs_no_auth(tmp_path):
    result = _run("serve", "--listen", "127.0.0.1:0", "--workers", "127.0.0.1:1", "--secret", "s")
    assert result.returncode != 0
    assert "--no-auth" in result.stderr


def test_hash_password_prints_an_argon2_hash():
    result = subprocess.run(
        [str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")), "hash-password"],
        input="secret\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("$argon2id$")


def test_credentials_against_a_cluster_without_auth(coordinator_uri):
    """Without users (loopback `local`), a Basic handshake still gets a token, as drivers
    given credentials insist on one, and that token works at the workers."""
    table = unique("noauth_login")
    db_kwargs = {"username": "anyone", "password": "anything"}
    with flightsql.connect(coordinator_uri, db_kwargs=db_kwargs) as conn:
        execute(conn, f"CREATE TABLE {table} (id BIGINT) WITH (distribution = 'hash(id)', shards = 2)")
        execute(conn, f"INSERT INTO {table} VALUES (1), (2), (3)")
        result = query(conn, f"SELECT id FROM {table}")
        assert sorted(result.column("id").to_pylist()) == [1, 2, 3]
    client = flight.FlightClient(coordinator_uri)
    header = client.authenticate_basic_token("anyone", "anything")
    assert header[1].startswith(b"Bearer ")
    client.close()
