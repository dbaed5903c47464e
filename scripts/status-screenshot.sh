#!/usr/bin/env bash
# Takes the screenshot of the coordinator's status page shown in docs/operations.md:
#   ./scripts/status-screenshot.sh [OUTPUT.png]     (default: docs/img/status-page.png)
#
# Starts a demo cluster (`flight-coordinator local --workers 3` with --http-listen on
# ephemeral loopback ports, data in a temporary directory), creates and loads three small
# tables and runs a few statements with `flight-coordinator sql` (one of them failing), then
# has headless Chromium render http://.../ into the PNG. Everything it started is stopped on exit.
#
# Needs the debug binaries (cargo build --workspace --bins) and chromium
# (Debian: apt-get install chromium).
#
# Environment:
#   FSQL_COORDINATOR_BIN  coordinator binary (default: <cargo target dir>/debug/flight-coordinator)
#   FSQL_CHROMIUM_BIN     browser (default: chromium or chromium-browser on PATH)
#   WINDOW_SIZE           browser window, WIDTHxHEIGHT (default: 1500x1400)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-docs/img/status-page.png}"
WINDOW_SIZE="${WINDOW_SIZE:-1500x1400}"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
COORDINATOR="${FSQL_COORDINATOR_BIN:-$TARGET_DIR/debug/flight-coordinator}"
[[ -x "$COORDINATOR" ]] || {
    echo "no coordinator binary at $COORDINATOR: run cargo build --workspace --bins" >&2
    exit 1
}
CHROMIUM="${FSQL_CHROMIUM_BIN:-$(command -v chromium || command -v chromium-browser || true)}"
[[ -n "$CHROMIUM" && -x "$CHROMIUM" ]] || {
    echo "chromium not found: apt-get install chromium (or set FSQL_CHROMIUM_BIN)" >&2
    exit 1
}

WORK="$(mktemp -d)"
CLUSTER_PID=""
cleanup() {
    if [[ -n "$CLUSTER_PID" ]] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
        kill -TERM "$CLUSTER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$CLUSTER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CLUSTER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The cluster prints `http on http://...` and then `listening on grpc://...` once it serves.
"$COORDINATOR" local --workers 3 --data-dir "$WORK/data" \
    --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    >"$WORK/stdout.log" 2>"$WORK/stderr.log" &
CLUSTER_PID=$!
for _ in $(seq 1200); do
    grep -q "listening on grpc://" "$WORK/stdout.log" && break
    kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$WORK/stderr.log" >&2; echo "the cluster exited" >&2; exit 1; }
    sleep 0.1
done
URI="$(sed -n 's/.*listening on \(grpc:\/\/[^ ]*\).*/\1/p' "$WORK/stdout.log" | head -n 1)"
HTTP="$(sed -n 's/.*http on \(http:\/\/[^ ]*\).*/\1/p' "$WORK/stdout.log" | head -n 1)"
[[ -n "$URI" && -n "$HTTP" ]] || { cat "$WORK/stdout.log" "$WORK/stderr.log" >&2; echo "the cluster did not start" >&2; exit 1; }
echo "cluster: $URI, status page: $HTTP/"

sql() { "$COORDINATOR" sql --uri "$URI" -c "$1" >/dev/null 2>&1; }
sql "CREATE TABLE events (id BIGINT, country INT, kind VARCHAR, at TIMESTAMP) WITH (distribution = 'hash(id)', shards = 4, replicas = 2)"
sql "INSERT INTO events SELECT value, value % 5, CASE value % 3 WHEN 0 THEN 'click' WHEN 1 THEN 'view' ELSE 'buy' END, to_timestamp_seconds(1767225600 + value * 60) FROM generate_series(1, 50000)"
sql "CREATE TABLE users (id BIGINT, name VARCHAR) WITH (distribution = 'round_robin', shards = 3)"
sql "INSERT INTO users SELECT value, 'user ' || value FROM generate_series(1, 2000)"
sql "CREATE TABLE countries (id INT, name VARCHAR) WITH (distribution = 'reference')"
sql "INSERT INTO countries VALUES (0, 'Chile'), (1, 'Japan'), (2, 'Kenya'), (3, 'Norway'), (4, 'Peru')"
sql "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY n DESC"
sql "SELECT c.name, count(*) AS n, min(e.at) AS first FROM events e JOIN countries c ON e.country = c.id GROUP BY c.name ORDER BY n DESC"
sql "SELECT id, kind, at FROM events WHERE id BETWEEN 100 AND 110"
sql "SELECT * FROM event" || true # fails: no such table
sql "SELECT count(DISTINCT name) FROM users"
{ echo "sku,price"; for i in $(seq 1 3000); do echo "$i,$((i % 97)).50"; done; } >"$WORK/items.csv"
sql "CREATE TABLE items AS SELECT * FROM read_csv('$WORK/items.csv')"
# Workers re-announce the shards they hold every 2 s (system.workers.shards).
sleep 2.5

mkdir -p "$(dirname "$OUT")"
timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-proxy-server --no-first-run --hide-scrollbars --user-data-dir="$WORK/chromium" \
    --window-size="${WINDOW_SIZE/x/,}" --screenshot="$(realpath "$OUT")" "$HTTP/" \
    >"$WORK/chromium.log" 2>&1 || { cat "$WORK/chromium.log" >&2; exit 1; }
echo "wrote $OUT"
