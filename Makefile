# rangeproxy: needs only python3 (>= 3.11) and make; everything else is
# installed by these targets (.venv/ for Python packages, apt-get for tools).

PYTHON      ?= python3
VENV        := .venv
VPY         := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
MEDIA_DIR   := data/media
PYTEST_ARGS ?=

.PHONY: all venv install system-deps test typecheck media demo bench cache-tests clean distclean docker-config-check test-docker

all: test

# --- Python environment -------------------------------------------------------

venv install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -e '.[test]'
	touch $@

# --- Tools from Debian (ffmpeg, curl, nginx, aria2c, node, npm) ----------------

system-deps:
	bash scripts/system-deps.sh

# --- Targets ------------------------------------------------------------------

test: $(STAMP) system-deps docker-config-check typecheck
	$(VPY) -m pytest -q $(PYTEST_ARGS)

# mypy on proxy/, appserver/ and conformance/ (strict for proxy/http and proxy/core; config in pyproject.toml).
typecheck: $(STAMP)
	$(VPY) -m mypy proxy appserver conformance

# `docker compose config -q` on docker-compose.yml (+ profile monitoring) and with
# docker-compose.ci.yml, and the proxy's own reading of config/compose-proxy.toml; skipped with a
# message without Docker Compose v2 (not under CI=true).
docker-config-check: $(STAMP)
	bash scripts/test-docker.sh config-check

# The containers for real: build, compose up (test override), check bytes and /stats.json
# through the proxy, tear down. Skips with a message where no Docker engine can be started.
test-docker:
	bash scripts/test-docker.sh run

media: $(STAMP)
	$(VPY) -m appserver.demo_media --out $(MEDIA_DIR)

demo: $(STAMP) media
	bash scripts/demo.sh

bench: $(STAMP) system-deps
	$(VPY) -m benchmarks

# The HTTP caching test suite behind cache-tests.fyi (npm http-cache-tests, installed with npm
# into .cache-tests/ on the first run) through the proxy; prints the figures beside the
# published ones. Needs node and npm (`make system-deps`). CACHE_TESTS_ARGS: e.g. --json,
# --set default_ttl=0s, --id TEST_ID (one test with its requests and responses).
CACHE_TESTS_ARGS ?=
cache-tests: $(STAMP)
	$(VPY) -m conformance.cache_tests $(CACHE_TESTS_ARGS)

clean:
	rm -rf build/ *.egg-info .pytest_cache .mypy_cache .hypothesis benchmarks/out .cache-tests $(MEDIA_DIR)
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) data/
