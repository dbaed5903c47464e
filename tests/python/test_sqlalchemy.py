"""SQLAlchemy / Superset through flightsql-dbapi (in its own virtualenv: it needs
SQLAlchemy < 2). scripts/test.sh makes .venv-sqlalchemy and sets FSQL_SQLALCHEMY_PYTHON."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from fsql_helpers import execute, unique

SCRIPT = Path(__file__).with_name("sqlalchemy_client.py")


def test_sqlalchemy_reflection_and_queries(coordinator_uri):
    python = os.environ.get("FSQL_SQLALCHEMY_PYTHON")
    if not python:
        pytest.skip("FSQL_SQLALCHEMY_PYTHON is not set (scripts/test.sh sets it)")
    table = unique("sa")
    with flightsql.connect(coordinator_uri) as conn:
        execute(
            conn,
            f"CREATE TABLE {table} (id BIGINT, name VARCHAR, price DOUBLE) "
            "WITH (distribution = 'hash(id)', shards = 3)",
        )
        execute(conn, f"INSERT INTO {table} VALUES (1, 'one', 1.5), (2, 'two', 2.5), (3, 'three', NULL)")
    url = urlparse(coordinator_uri)
    result = subprocess.run(
        [python, str(SCRIPT), url.hostname, str(url.port), table],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "public" in out["schemas"]
    assert table in out["tables"]
    assert [c["name"] for c in out["columns"]] == ["id", "name", "price"]
    assert [c["type"] for c in out["columns"]] == ["BIGINT", "TEXT", "FLOAT"]
    assert out["rows"] == [[1, "one"], [2, "two"], [3, "three"], [4, "four"], [5, None]]
    assert out["core_rows"] == [[2, 2.5], [3, None], [4, 4.5], [5, None]]
    assert out["aggregate"] == [{"n": 5, "s": 15}]
