"""SQLAlchemy through flightsql-dbapi, as Superset uses it; run by the .venv-sqlalchemy
interpreter (see test_sqlalchemy.py). Prints what it saw as JSON.

Usage: sqlalchemy_client.py HOST PORT TABLE
"""

import json
import math
import sys

import sqlalchemy as sa

host, port, table = sys.argv[1], sys.argv[2], sys.argv[3]


def plain(row):
    # flightsql-dbapi goes through pandas: a NULL string arrives as NaN.
    return [None if isinstance(v, float) and math.isnan(v) else v for v in row]


# flightsql-dbapi reads only the first endpoint of a result, at the server it asked:
# `fsql-direct=false` (sent as a header) makes the coordinator answer with that one endpoint.
engine = sa.create_engine(f"datafusion://{host}:{port}?insecure=true&fsql-direct=false")
out = {}
with engine.connect() as conn:
    inspector = sa.inspect(conn)
    out["schemas"] = inspector.get_schema_names()
    out["tables"] = inspector.get_table_names()
    out["columns"] = [
        {"name": c["name"], "type": str(c["type"])} for c in inspector.get_columns(table)
    ]
    conn.execute(sa.text(f"INSERT INTO {table} VALUES (4, 'four', 4.5), (5, NULL, NULL)"))
    rows = conn.execute(sa.text(f"SELECT id, name FROM {table} ORDER BY id")).fetchall()
    out["rows"] = [plain(r) for r in rows]
    t = sa.Table(table, sa.MetaData(), autoload_with=conn)
    query = sa.select(t.c.id, t.c.price).where(t.c.id > 1).order_by(t.c.id)
    out["core_rows"] = [plain(r) for r in conn.execute(query).fetchall()]
    agg = conn.execute(sa.text(f"SELECT count(*) AS n, sum(id) AS s FROM {table}")).fetchall()
    out["aggregate"] = [dict(r._mapping) for r in agg]
print(json.dumps(out))
