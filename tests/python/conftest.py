"""Fixtures for the Python client tests: real clusters started from the built binaries.

Each cluster is a child process on ephemeral loopback ports. Readiness is the one
`... listening on grpc://HOST:PORT` line the binary prints on stdout (no sleeps); its
stderr (the logs) goes to a file that is printed when startup fails and attached to the
report of every failing test that used the cluster.

Environment:
  FSQL_COORDINATOR_BIN  path to `flight-coordinator` (default: <target>/debug/flight-coordinator)
  FSQL_WORKER_BIN       path to `flight-worker`      (default: <target>/debug/flight-worker)
  FSQL_START_TIMEOUT    seconds to wait for a process to report it is listening (default 120)
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("FSQL_START_TIMEOUT", "120"))
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"listening on (grpc(?:\+tls)?://\S+)")

# Every process a fixture started, so that a failing test can show the logs of its servers.
_PROCESSES: list["ServerProcess"] = []
_LOG_OFFSETS = pytest.StashKey[dict]()


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")


def binary(env_var: str, name: str) -> Path:
    path = Path(os.environ.get(env_var) or _target_dir() / "debug" / name)
    if not path.is_file():
        pytest.fail(
            f"{name} binary not found at {path}: build it with `cargo build --workspace --bins` "
            f"or set {env_var}",
            pytrace=False,
        )
    return path


class ServerProcess:
    """One server child process; `uri` is read from its `listening on` line."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.uri: str | None = None
        self.log_path = log_dir / f"{name}.stderr.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1", **(env or {})},
        )
        _PROCESSES.append(self)
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        self.uri = self._wait_listening()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _wait_listening(self) -> str:
        try:
            while True:
                line = self._lines.get(timeout=START_TIMEOUT)
                if line is None:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    raise RuntimeError(
                        f"exited with code {self.proc.returncode} before it was listening"
                    )
                match = LISTENING.search(line)
                if match:
                    return match.group(1)
        except queue.Empty:
            self.stop()
            error = f"printed no `listening on grpc://...` line within {START_TIMEOUT:.0f}s"
        except RuntimeError as exc:
            self.stop()
            error = str(exc)
        pytest.fail(
            f"{self.name} failed to start: {error}\n"
            f"command: {' '.join(self.argv)}\n"
            f"stdout:\n{os.linesep.join(self.stdout_lines)}\n"
            f"stderr ({self.log_path}):\n{self.stderr_tail()}",
            pytrace=False,
        )

    def stderr_tail(self, max_bytes: int = 20_000) -> str:
        data = self.log_path.read_bytes()
        prefix = b"...\n" if len(data) > max_bytes else b""
        return (prefix + data[-max_bytes:]).decode("utf-8", "replace")

    def stderr_since(self, offset: int, max_bytes: int = 8_000) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        prefix = b"...\n" if len(data) > max_bytes else b""
        return (prefix + data[-max_bytes:]).decode("utf-8", "replace")

    def exit_status(self) -> str | None:
        code = self.proc.poll()
        return None if code is None else f"{self.name} exited with code {code}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def stop_checked(self) -> None:
        """Stop and report a server that had already died or did not exit on SIGTERM."""
        already_dead = self.exit_status()
        if already_dead is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                pytest.fail(
                    f"{self.name} did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM\n"
                    f"stderr:\n{self.stderr_tail()}",
                    pytrace=False,
                )
        self._log.close()
        if already_dead is not None:
            pytest.fail(
                f"{already_dead} while the tests were running\nstderr:\n{self.stderr_tail()}",
                pytrace=False,
            )


HTTP_LINE = re.compile(r"http on (http://\S+)")


def http_url(server: ServerProcess) -> str:
    """The `--http-listen` base URL a server printed (`... http on http://HOST:PORT`)."""
    for line in server.stdout_lines:
        match = HTTP_LINE.search(line)
        if match:
            return match.group(1)
    pytest.fail(f"{server.name} printed no `http on http://...` line: {server.stdout_lines}")


def start_local_cluster(tmp_path_factory, workers: int, *extra: str) -> ServerProcess:
    data_dir = tmp_path_factory.mktemp(f"local-{workers}w-data")
    log_dir = tmp_path_factory.mktemp(f"local-{workers}w-logs")
    argv = [
        binary("FSQL_COORDINATOR_BIN", "flight-coordinator"),
        "local",
        "--listen", "127.0.0.1:0",
        "--workers", str(workers),
        "--data-dir", data_dir,
        *extra,
    ]
    return ServerProcess(f"flight-coordinator-local-{workers}w", argv, log_dir)


@pytest.fixture(scope="session")
def coordinator_uri(tmp_path_factory):
    """`flight-coordinator local --workers 2`: the URI of its Flight SQL endpoint."""
    server = start_local_cluster(tmp_path_factory, 2)
    yield server.uri
    server.stop_checked()


@pytest.fixture(scope="session")
def coordinator_uri_3w(tmp_path_factory):
    """`flight-coordinator local --workers 3`: the URI of its Flight SQL endpoint."""
    server = start_local_cluster(tmp_path_factory, 3)
    yield server.uri
    server.stop_checked()


@pytest.fixture(scope="session")
def coordinator_uri_no_direct(tmp_path_factory):
    """`flight-coordinator local --workers 2 --no-direct`."""
    server = start_local_cluster(tmp_path_factory, 2, "--no-direct")
    yield server.uri
    server.stop_checked()


@pytest.fixture(scope="session")
def coordinator_uri_tpch(tmp_path_factory):
    """`flight-coordinator local --workers 2 --demo-tpch 0.01`."""
    server = start_local_cluster(tmp_path_factory, 2, "--demo-tpch", "0.01")
    yield server.uri
    server.stop_checked()


@pytest.fixture(scope="session")
def serve_cluster(tmp_path_factory):
    """Separate processes: two `flight-worker`s and `flight-coordinator serve` in front.

    Yields (coordinator_uri, [worker_uri, ...]).
    """
    secret = "python-tests-secret"
    log_dir = tmp_path_factory.mktemp("serve-logs")
    servers: list[ServerProcess] = []
    try:
        for i in range(2):
            data_dir = tmp_path_factory.mktemp(f"serve-worker{i}-data")
            argv = [
                binary("FSQL_WORKER_BIN", "flight-worker"),
                "--listen", "127.0.0.1:0",
                "--data-dir", data_dir,
                "--secret", secret,
            ]
            servers.append(ServerProcess(f"flight-worker-{i}", argv, log_dir))
        worker_uris = [s.uri for s in servers]
        workers_arg = ",".join(u.removeprefix("grpc://") for u in worker_uris)
        argv = [
            binary("FSQL_COORDINATOR_BIN", "flight-coordinator"),
            "serve",
            "--listen", "127.0.0.1:0",
            "--workers", workers_arg,
            "--secret", secret,
            "--no-auth",
        ]
        coordinator = ServerProcess("flight-coordinator-serve", argv, log_dir)
        servers.append(coordinator)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    yield coordinator.uri, worker_uris
    errors = []
    for s in reversed(servers):
        try:
            s.stop_checked()
        except pytest.fail.Exception as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


AUTH_USER = "alice"
AUTH_PASSWORD = "wonder land:42"


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    """A test CA (trustme) and a server certificate for localhost / 127.0.0.1.

    Returns a dict of PEM file paths: `ca`, `cert` (chain), `key`.
    """
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    d = tmp_path_factory.mktemp("tls")
    paths = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    with open(paths["cert"], "wb") as f:
        for pem in server.cert_chain_pems:
            f.write(pem.bytes())
    server.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def hash_password(password: str) -> str:
    """`flight-coordinator hash-password` (reads the password from stdin)."""
    result = subprocess.run(
        [str(binary("FSQL_COORDINATOR_BIN", "flight-coordinator")), "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


@pytest.fixture(scope="session")
def secure_cluster(tmp_path_factory, tls_certs):
    """`flight-coordinator local --config fsql.toml`: TLS and one user, from the config file.

    Yields a dict: `uri` (grpc+tls://...), `ca` (PEM bytes), `user`, `password`.
    """
    config = tmp_path_factory.mktemp("secure-config") / "fsql.toml"
    config.write_text(
        "[local]\n"
        f'tls_cert = "{tls_certs["cert"]}"\n'
        f'tls_key = "{tls_certs["key"]}"\n'
        f'tls_ca = "{tls_certs["ca"]}"\n'
        'max_message_size = "512MiB"\n'
        "\n[[users]]\n"
        f'name = "{AUTH_USER}"\n'
        f'password_hash = "{hash_password(AUTH_PASSWORD)}"\n'
    )
    server = start_local_cluster(tmp_path_factory, 2, "--config", config)
    yield {
        "uri": server.uri,
        "ca": tls_certs["ca"].read_bytes(),
        "user": AUTH_USER,
        "password": AUTH_PASSWORD,
        "stdout": server.stdout_lines,
    }
    server.stop_checked()


@pytest.fixture(scope="session")
def secure_serve_cluster(tmp_path_factory, tls_certs):
    """Separate processes with TLS and auth, all configured by one TOML file.

    Two `flight-worker --config` and `flight-coordinator serve --config`; the file holds
    `[coordinator]`, `[worker]` and `[[users]]`. Yields a dict like `secure_cluster`'s, plus
    `workers` (their grpc+tls:// URIs).
    """
    secret = "python-secure-serve-secret-0123456789"
    d = tmp_path_factory.mktemp("secure-serve")
    tls = (
        f'tls_cert = "{tls_certs["cert"]}"\n'
        f'tls_key = "{tls_certs["key"]}"\n'
    )
    config = d / "fsql.toml"
    config.write_text(
        "[coordinator]\n"
        f'secret = "{secret}"\n'
        + tls
        + f'tls_ca = "{tls_certs["ca"]}"\n'
        + "\n[worker]\n"
        f'secret = "{secret}"\n'
        + tls
        + "\n[[users]]\n"
        f'name = "{AUTH_USER}"\n'
        f'password_hash = "{hash_password(AUTH_PASSWORD)}"\n'
    )
    servers: list[ServerProcess] = []
    try:
        for i in range(2):
            argv = [
                binary("FSQL_WORKER_BIN", "flight-worker"),
                "--config", config,
                "--listen", "127.0.0.1:0",
                "--data-dir", tmp_path_factory.mktemp(f"secure-worker{i}-data"),
            ]
            servers.append(ServerProcess(f"flight-worker-secure-{i}", argv, d))
        worker_uris = [s.uri for s in servers]
        workers_arg = ",".join(u.removeprefix("grpc+tls://") for u in worker_uris)
        argv = [
            binary("FSQL_COORDINATOR_BIN", "flight-coordinator"),
            "serve",
            "--config", config,
            "--listen", "127.0.0.1:0",
            "--workers", workers_arg,
        ]
        coordinator = ServerProcess("flight-coordinator-serve-secure", argv, d)
        servers.append(coordinator)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    yield {
        "uri": coordinator.uri,
        "ca": tls_certs["ca"].read_bytes(),
        "user": AUTH_USER,
        "password": AUTH_PASSWORD,
        "stdout": coordinator.stdout_lines,
        "workers": worker_uris,
    }
    for s in reversed(servers):
        s.stop_checked()


@pytest.fixture
def conn(coordinator_uri):
    """A fresh ADBC connection to the 2-worker cluster."""
    with flightsql.connect(coordinator_uri) as connection:
        yield connection


@pytest.fixture
def conn3(coordinator_uri_3w):
    """A fresh ADBC connection to the 3-worker cluster."""
    with flightsql.connect(coordinator_uri_3w) as connection:
        yield connection


def _fixture_strings(item) -> set[str]:
    """Strings among a test's fixture values (URIs), also inside tuples and lists."""
    found: set[str] = set()
    stack = list(getattr(item, "funcargs", {}).values())
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, (tuple, list)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Remember where each server's log stood, to show only what this test produced.
    item.stash[_LOG_OFFSETS] = {
        id(s): s.log_path.stat().st_size for s in _PROCESSES if s.log_path.exists()
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not report.failed:
        return report
    used = _fixture_strings(item)
    offsets = item.stash.get(_LOG_OFFSETS, {})
    for server in _PROCESSES:
        if server.uri is None or server.uri not in used:
            continue
        status = server.exit_status() or "still running"
        report.sections.append(
            (
                f"{server.name} stderr during this test ({status})",
                server.stderr_since(offsets.get(id(server), 0)),
            )
        )
    return report
