"""ADBC ingest benchmark, run by `bench ingest` (tests/src/bin/bench).

Reads an Arrow IPC file into memory, (re)creates the target table with the given
CREATE TABLE statement through the ADBC Flight SQL driver, then times one
`cursor.adbc_ingest(table, data, mode="append")` call (a DoPut of
CommandStatementIngest) and checks the row count. Prints `rows=N seconds=S`.
"""

import argparse
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.ipc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--uri", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--create", required=True, help="CREATE TABLE statement for --table")
    args = p.parse_args()

    with pyarrow.ipc.open_file(args.file) as f:
        data = f.read_all()
    with flightsql.connect(args.uri, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {args.table}")
            cur.execute(args.create)
            start = time.perf_counter()
            cur.adbc_ingest(args.table, data, mode="append")
            seconds = time.perf_counter() - start
            cur.execute(f"SELECT count(*) FROM {args.table}")
            (rows,) = cur.fetchone()
            cur.execute(f"DROP TABLE {args.table}")
    if rows != data.num_rows:
        raise SystemExit(f"ingested {rows} rows, expected {data.num_rows}")
    print(f"rows={rows} seconds={seconds:.6f}")


if __name__ == "__main__":
    main()
