"""`flight-coordinator sql`, the SQL shell: -c, a script on stdin, a pseudo-terminal, TLS + login."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from conftest import binary
from fsql_helpers import unique


def shell(uri: str, *args: str, stdin: str | None = None, env: dict | None = None):
    argv = [str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")), "sql", "--uri", uri, *args]
    return subprocess.run(
        argv,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def test_command_runs_statements_and_prints_aligned_tables(coordinator_uri):
    t = unique("shell_c")
    r = shell(
        coordinator_uri,
        "-c",
        f"CREATE TABLE {t} (id BIGINT, name VARCHAR) WITH (distribution = 'hash(id)', shards = 3);"
        f"INSERT INTO {t} VALUES (1, 'one'), (2, 'two'), (3, NULL);"
        f"SELECT id, name FROM {t} ORDER BY id",
    )
    assert r.returncode == 0, r.stderr
    assert "OK, 3 row(s) affected" in r.stdout
    lines = r.stdout.splitlines()
    header = next(line for line in lines if "| id" in line)
    assert header.replace(" ", "") == "|id|name|"
    body = [line for line in lines if line.startswith("| ") and line != header]
    assert [line.replace(" ", "") for line in body] == ["|1|one|", "|2|two|", "|3||"]
    # Every table line is as wide as the header: aligned columns.
    assert {len(line) for line in body} == {len(header)}
    assert "(3 rows, " in r.stdout


def test_script_on_stdin_with_session_settings(coordinator_uri):
    t = unique("shell_s")
    script = f"""
        -- a comment; not a statement
        CREATE TABLE {t} (k BIGINT, v BIGINT)
          WITH (distribution = 'hash(k)', shards = 2);
        INSERT INTO {t} VALUES (1, 10), (2, 20), (3, 30);
        .set distributed=false
        .get
        SELECT sum(v) AS total,
               count(*) AS n
          FROM {t};
    """
    r = shell(coordinator_uri, stdin=script)
    assert r.returncode == 0, r.stderr
    assert "distributed set" in r.stdout
    assert "distributed = false" in r.stdout
    row = next(line for line in r.stdout.splitlines() if "| 60" in line)
    assert row.replace(" ", "") == "|60|3|"


def test_errors_are_reported_and_fail_the_script(coordinator_uri):
    r = shell(coordinator_uri, "-c", "SELECT * FROM no_such_table_here; SELECT 1 AS one")
    assert r.returncode != 0
    assert "error:" in r.stderr and "no_such_table_here" in r.stderr
    # The statement after the failing one still ran.
    assert "(1 row, " in r.stdout
    r = shell(coordinator_uri, "-c", ".nonsense")
    assert r.returncode != 0 and "unknown command" in r.stderr
    r = shell("grpc://127.0.0.1:1", "-c", "SELECT 1")
    assert r.returncode != 0 and "cannot connect" in r.stderr


def _read_until(fd: int, needle: str, timeout: float = 60.0) -> str:
    out = ""
    deadline = time.monotonic() + timeout
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"waited for {needle!r}, got:\n{out}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk.decode("utf-8", "replace")
    return out


def _shell_on_a_terminal(uri: str, home) -> tuple[int, subprocess.Popen]:
    """The interactive shell on a pseudo-terminal: (the terminal's fd, the process)."""
    argv = [str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")), "sql", "--uri", uri]
    main, child = pty.openpty()
    proc = subprocess.Popen(
        argv,
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"},
        close_fds=True,
    )
    os.close(child)
    return main, proc


def test_interactive_prompt_multiline_and_history(coordinator_uri, tmp_path):
    main, proc = _shell_on_a_terminal(coordinator_uri, tmp_path)
    try:
        _read_until(main, "fsql> ")
        os.write(main, b"SELECT 40 +\r")
        _read_until(main, "-> ")
        os.write(main, b"2 AS answer;\r")
        out = _read_until(main, "(1 row, ")
        assert "answer" in out and "42" in out
        os.write(main, b".quit\r")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    history = (tmp_path / ".fsql_history").read_text()
    assert "SELECT 40 +" in history


def test_tls_and_login(secure_cluster, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(secure_cluster["ca"])
    uri = secure_cluster["uri"]
    r = shell(
        uri,
        "--tls-ca", str(ca),
        "--user", secure_cluster["user"],
        "-c", "SELECT 7 AS seven",
        env={"FSQL_PASSWORD": secure_cluster["password"]},
    )
    assert r.returncode == 0, r.stderr
    assert "| 7" in r.stdout
    r = shell(
        uri, "--tls-ca", str(ca), "--user", secure_cluster["user"], "--password", "wrong",
        "-c", "SELECT 1",
    )
    assert r.returncode != 0 and "login" in r.stderr


def test_load_shows_progress_on_a_terminal(coordinator_uri, tmp_path):
    # Enough CSV rows that the load runs for more than the half second
    # after which the shell starts showing progress.
    for f in range(12):
        with open(tmp_path / f"part-{f:02}.csv", "w") as out:
            out.write("id,name,amount\n")
            start = f * 100_000
            out.writelines(f"{i},name {i},{i % 1000}.25\n" for i in range(start, start + 100_000))
    t = unique("shell_load")
    main, proc = _shell_on_a_terminal(coordinator_uri, tmp_path)
    try:
        _read_until(main, "fsql> ")
        stmt = f"CREATE TABLE {t} AS SELECT * FROM read_csv('{tmp_path}/part-*.csv');\r"
        os.write(main, stmt.encode())
        out = _read_until(main, "row(s) affected", timeout=300)
        assert "OK, 1200000 row(s) affected" in out
        # A progress bar with the files read, before the result.
        assert "files read" in out and ("[#" in out or "[." in out), out
        os.write(main, b".quit\r")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    r = shell(
        coordinator_uri,
        "-c",
        f"SELECT state, rows, progress FROM system.queries WHERE sql LIKE 'CREATE TABLE {t} %'",
    )
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "finished" in line)
    assert "1200000" in row and "100% (12/12 files read, 1200000 rows written)" in row
