#!/usr/bin/env bash
# Start the demo stack in the foreground; Ctrl-C stops everything.
#   origin: the appserver (demo ASGI media origin) serving data/media
#   proxy:  rangeproxy in front of it (added here once the proxy exists)
# Run through `make demo`, which first builds .venv and the demo media.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PY:-.venv/bin/python}
ORIGIN_CONFIG=${ORIGIN_CONFIG:-config/appserver.toml}
MEDIA_DIR=${MEDIA_DIR:-data/media}

# host/port from the config file, so the printed URLs match what is served.
read -r ORIGIN_HOST ORIGIN_PORT < <("$PY" - "$ORIGIN_CONFIG" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    c = tomllib.load(f)
print(c.get("host", "127.0.0.1"), c.get("port", 8081))
PYEOF
)
ORIGIN_URL="http://${ORIGIN_HOST}:${ORIGIN_PORT}"

PIDS=()
cleanup() {
    trap - EXIT INT TERM
    if [ ${#PIDS[@]} -gt 0 ]; then
        echo
        echo "demo: stopping (pids ${PIDS[*]})"
        kill "${PIDS[@]}" 2>/dev/null || true
        wait "${PIDS[@]}" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for_port HOST PORT NAME PID: until HOST:PORT accepts connections.
wait_for_port() {
    local host=$1 port=$2 name=$3 pid=$4
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: $name exited before listening on $host:$port" >&2
            exit 1
        fi
        if "$PY" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()' \
            "$host" "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "demo: $name did not listen on $host:$port within 10 s" >&2
    exit 1
}

# The origin's change feed (/_events) and the proxy's subscription share a token made for this run.
FEED_TOKEN=${FEED_TOKEN:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')}

# --- origin ---------------------------------------------------------------------
start_origin() {
    "$PY" -m appserver --config "$ORIGIN_CONFIG" --media-dir "$MEDIA_DIR" --events-token "$FEED_TOKEN" &
    PIDS+=($!)
    wait_for_port "$ORIGIN_HOST" "$ORIGIN_PORT" origin "$!"
}

# --- proxy ----------------------------------------------------------------------
PROXY_CONFIG=${PROXY_CONFIG:-config/proxy.toml}
read -r PROXY_HOST PROXY_PORT < <("$PY" - "$PROXY_CONFIG" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    c = tomllib.load(f)
print(c.get("host", "127.0.0.1"), c.get("port", 8080))
PYEOF
)
PROXY_URL="http://${PROXY_HOST}:${PROXY_PORT}"
start_proxy() {
    RANGEPROXY_CHANGE_FEED_TOKEN="$FEED_TOKEN" "$PY" -m proxy --config "$PROXY_CONFIG" --upstream "$ORIGIN_URL" \
        --set "change_feed=ws://${ORIGIN_HOST}:${ORIGIN_PORT}/_events" &
    PIDS+=($!)
    wait_for_port "$PROXY_HOST" "$PROXY_PORT" proxy "$!"
}

print_urls() {
    cat <<MSG

demo: proxy (rangeproxy, slice cache in data/cache) at $PROXY_URL/
  a range:     curl -s -r 20-345 $PROXY_URL/big.bin | wc -c          # 326 bytes, X-Cache: MISS then HIT
  headers:     curl -s -D - -o /dev/null -r 20-345 $PROXY_URL/big.bin
  multi-range: curl -s -D - -r 0-4,-6 $PROXY_URL/hello.txt           # multipart/byteranges
  video:       $PROXY_URL/sample.mp4   (open in a browser or: ffprobe $PROXY_URL/sample.mp4)
  dashboard:   $PROXY_URL/stats   (JSON: $PROXY_URL/stats.json, Prometheus: $PROXY_URL/metrics)
  health:      $PROXY_URL/healthz
  purge on change: replace or touch a file in $MEDIA_DIR: the origin's change feed tells the proxy,
               which drops it at once (the dashboard's "change feed" line counts the purges)

demo: origin (appserver) serving $MEDIA_DIR at $ORIGIN_URL/
  catalogue:   $ORIGIN_URL/
  change feed: ws://${ORIGIN_HOST}:${ORIGIN_PORT}/_events  (token for this run: $FEED_TOKEN)
  files:       $ORIGIN_URL/big.bin  $ORIGIN_URL/sample.mp4  $ORIGIN_URL/sample.pdf  $ORIGIN_URL/hello.txt

demo: press Ctrl-C to stop
MSG
}

start_origin
start_proxy
print_urls

# Returns when a child exits (or Ctrl-C); the EXIT trap stops the others.
wait -n "${PIDS[@]}"
