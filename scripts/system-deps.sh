#!/usr/bin/env bash
# Install the Debian packages that the test suite and benchmarks use, but only
# those whose command is missing.  Never fails the build: when nothing can be
# installed (not root, no apt-get, no network) it says so and exits 0; the
# tests that need a missing tool then skip with the reason (and fail when
# CI=true, see tests/support/tools.py).
set -uo pipefail

# command -> Debian package
declare -a WANT=(
    "ffmpeg:ffmpeg"
    "curl:curl"
    "nginx:nginx-light"
    "aria2c:aria2"
    "wrk:wrk"
    "chromium:chromium"
    "node:nodejs"
    "npm:npm"
    "haproxy:haproxy"  # the consistent-hash front of the loopback cluster (python -m cluster)
)
# Debian packages without a command of their own, checked with dpkg-query.
declare -a WANT_PACKAGES=(
    "libjs-pdf"  # pdf.js, served to headless Chromium by tests/browser/test_cors_chromium.py
)

have() {
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# promtool (tests/unit/test_deploy_config.py checks config/prometheus.yml and the Grafana
# dashboard's queries with it) without installing a Prometheus server, whose Debian package would also
# start one: the binary alone, out of that package, into build/tools/prometheus/ (git-ignored).
PROMTOOL=build/tools/prometheus/usr/bin/promtool
fetch_promtool() {
    if have promtool || [ -x "$PROMTOOL" ]; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || {
        echo "system-deps: promtool missing and no apt-get/dpkg-deb to fetch it (install Prometheus's promtool)" >&2
        return 0
    }
    local tmp
    tmp=$(mktemp -d)
    if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
        # No package lists yet (a fresh machine): read them once, as root.
        [ "$(id -u)" -eq 0 ] && apt-get update -q >/dev/null 2>&1 \
            && (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1)
    fi
    if ls "$tmp"/prometheus_*.deb >/dev/null 2>&1; then
        mkdir -p "$(dirname "$PROMTOOL")"
        dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x" && cp "$tmp/x/usr/bin/promtool" "$PROMTOOL"
    fi
    rm -rf "$tmp"
    if [ -x "$PROMTOOL" ]; then
        echo "system-deps: promtool OK ($PROMTOOL, from Debian's prometheus package)"
    else
        echo "system-deps: could not fetch promtool (apt-get download prometheus failed)" >&2
    fi
}
fetch_promtool

missing_cmds=()
missing_pkgs=()
for entry in "${WANT[@]}"; do
    cmd=${entry%%:*}
    pkg=${entry#*:}
    if ! have "$cmd"; then
        missing_cmds+=("$cmd")
        missing_pkgs+=("$pkg")
    fi
done
for pkg in "${WANT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing_cmds+=("($pkg)")
        missing_pkgs+=("$pkg")
    fi
done

if [ ${#missing_pkgs[@]} -eq 0 ]; then
    echo "system-deps: all present (${WANT[*]%%:*} ${WANT_PACKAGES[*]})"
    exit 0
fi

echo "system-deps: missing commands: ${missing_cmds[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: apt-get not found; please install these yourself: ${missing_pkgs[*]}" >&2
    echo "system-deps: continuing; tests needing them will be skipped (or fail under CI=true)." >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: not root; to install them run:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
    echo "system-deps: continuing; tests needing them will be skipped (or fail under CI=true)." >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "system-deps: apt-get update"
if ! apt-get update -q; then
    echo "system-deps: apt-get update failed; continuing without ${missing_pkgs[*]}" >&2
    exit 0
fi

# nginx-light was dropped in newer Debian releases; fall back to plain nginx.
pkgs=()
for pkg in "${missing_pkgs[@]}"; do
    if [ "$pkg" = nginx-light ] && ! apt-cache show nginx-light >/dev/null 2>&1; then
        pkg=nginx
    fi
    pkgs+=("$pkg")
done

echo "system-deps: apt-get install ${pkgs[*]}"
if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    echo "system-deps: apt-get install failed; continuing (tests needing these tools will skip, or fail under CI=true)" >&2
    exit 0
fi

for cmd in "${missing_cmds[@]}"; do
    if [[ $cmd == "("*")" ]]; then
        pkg=${cmd:1:-1}
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            echo "system-deps: $pkg OK"
        else
            echo "system-deps: $pkg still missing after install" >&2
        fi
    elif have "$cmd"; then
        echo "system-deps: $cmd OK"
    else
        echo "system-deps: $cmd still missing after install" >&2
    fi
done
exit 0
