# rangeproxy: needs only python3 (>= 3.11) and make; everything else is
# installed by these targets (.venv/ for Python packages, apt-get for tools).

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
MEDIA_DIR   := data/media
PYTEST_ARGS ?=

.PHONY: all venv install system-deps test typecheck media demo bench cache-tests fuzz soak clean distclean docker-config-check test-docker test-cluster cluster

all: test

# --- Python environment -------------------------------------------------------

venv install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -e '.[test]'
	touch $@

# --- Tools from Debian (ffmpeg, curl, nginx, aria2c, node, npm, haproxy) -------

system-deps:
	bash scripts/system-deps.sh

# --- Targets ------------------------------------------------------------------

test: $(STAMP) system-deps docker-config-check typecheck
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# mypy on proxy/, appserver/, conformance/, hardening/ and cluster/ (strict for proxy/http and proxy/core; config in pyproject.toml).
typecheck: $(STAMP)
	$(VPY) -m mypy proxy appserver conformance hardening cluster

# `docker compose config -q` on docker-compose.yml (+ profile monitoring) and with
# docker-compose.ci.yml, and the proxy's own reading of config/compose-proxy.toml; skipped with a
# message without Docker Compose v2 (not under CI=true).
docker-config-check: $(STAMP)
	bash scripts/test-docker.sh config-check

# The containers for real: build, compose up (test override), check bytes and /stats.json
# through the proxy, tear down. Skips with a message where no Docker engine can be started.
test-docker:
	bash scripts/test-docker.sh run

# The compose cluster profile for real (HAProxy + node1..3 + the appserver) on the same engine,
# with a small form of the loopback cluster's checks (cluster/fleetcheck.py).
test-cluster:
	bash scripts/test-docker.sh cluster

media: $(STAMP)
	$(VPY) -m appserver.demo_media --out $(MEDIA_DIR)

demo: $(STAMP) media
	bash scripts/demo.sh

bench: $(STAMP) system-deps
	$(VPY) -m benchmarks

# The loopback cluster (README, "Loopback cluster"): HAProxy on 127.0.0.1:8080 hashing the path onto
# 3 proxies of CLUSTER_ORIGIN (default: the demo origin, `python -m appserver`), until Ctrl-C.
# CLUSTER_ARGS: e.g. --nodes 4, --port 0, --workdir DIR, --set key=value.
CLUSTER_ORIGIN ?= http://127.0.0.1:8081
CLUSTER_ARGS   ?=
cluster: $(STAMP) system-deps
	$(VPY) -m cluster --origin $(CLUSTER_ORIGIN) $(CLUSTER_ARGS)

# The soak (minutes, not part of `make test`): 500 clients for 60 s against the proxy in front of an
# origin that changes objects and injects faults, with one worker, then two; the figures of both.
# SOAK_ARGS: e.g. --seconds 30 --clients 200 --seed N (replays a run's choices).
SOAK_ARGS ?=
soak: $(STAMP)
	$(VPY) -m hardening.soak $(SOAK_ARGS); one=$$?; \
	$(VPY) -m hardening.soak --workers 2 $(SOAK_ARGS); two=$$?; \
	test $$one -eq 0 && test $$two -eq 0

# The HTTP caching test suite behind cache-tests.fyi (npm http-cache-tests, installed with npm
# into .cache-tests/ on the first run) through the proxy; prints the figures beside the
# published ones. Needs node and npm (`make system-deps`). CACHE_TESTS_ARGS: e.g. --json,
# --set default_ttl=0s, --id TEST_ID (one test with its requests and responses).
CACHE_TESTS_ARGS ?=
cache-tests: $(STAMP)
	$(VPY) -m conformance.cache_tests $(CACHE_TESTS_ARGS)

# 100,000 generated request heads (at most 15 minutes) against a real proxy in front of the fault
# origin (README "Fuzzing"); prints its seed: FUZZ_ARGS="--seed N" replays, "--inputs N" sizes it.
# FUZZ_KNOWN: known proxy bugs counted instead of failing the run, until they are fixed.
FUZZ_KNOWN ?= --tolerate pooled-reset
FUZZ_ARGS  ?=
fuzz: $(STAMP)
	$(VPY) -m hardening.fuzz $(FUZZ_KNOWN) $(FUZZ_ARGS)

clean:
	rm -rf build/ *.egg-info .pytest_cache .mypy_cache .hypothesis benchmarks/out .cache-tests $(MEDIA_DIR)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) data/
