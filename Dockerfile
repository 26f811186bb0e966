# rangeproxy container image: ONE image for both programs of this repository,
#   the caching proxy      python -m proxy       (the default command, port 8080)
#   the demo media origin  python -m appserver   (docker-compose.yml's `appserver`, port 8081,
#                                                and `downloads`, port 8082, on another directory)
# Why one image: both are one Python distribution (pyproject.toml installs the packages
# `proxy` and `appserver` with one set of dependencies), so two images would hold the same
# layers twice and could drift apart; docker-compose.yml picks the program with `command:`.
#
# Stages:
#   build    python:3.11-slim + pip: a virtualenv in /opt/venv with the dependencies (one
#            layer, rebuilt only when pyproject.toml changes) and then the project itself.
#   runtime  python:3.11-slim + that virtualenv only (pip, setuptools and wheel removed from
#            it; the base image's own pip stays), no compiler, no source tree, no build
#            leftovers; runs as the unprivileged user `rangeproxy` (uid/gid 10001).
#
# No ffmpeg: the demo origin makes big.bin, sample.pdf and hello.txt on its first start
# (python -m appserver.demo_media), but not sample.mp4. ffmpeg and its libraries would add
# several hundred MB to an image whose real job is the proxy, and an apt-get step to every
# build; to serve a video, mount a directory made with `make media` on the host, or your own
# files (README, "Docker").
#
# Build:   docker build -t rangeproxy .
# Run:     docker run -p 8080:8080 -e RANGEPROXY_UPSTREAM=http://origin:port rangeproxy
# pip behind an index mirror: --build-arg PIP_INDEX_URL=... (also PIP_EXTRA_INDEX_URL,
# PIP_TRUSTED_HOST); empty (the default) means pip's own default.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Empty build args are dropped, so that an unset one leaves pip's default in force.
RUN python3 -m venv /opt/venv \
 && printf '%s\n' \
      '#!/bin/sh' \
      '[ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL' \
      '[ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL' \
      '[ -n "$PIP_TRUSTED_HOST" ] || unset PIP_TRUSTED_HOST' \
      'exec /opt/venv/bin/python -m pip "$@"' > /usr/local/bin/venv-pip \
 && chmod 0755 /usr/local/bin/venv-pip \
 && venv-pip install -q --upgrade pip setuptools wheel

# Dependencies first, from pyproject.toml alone: editing the code does not reinstall them.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > requirements.txt \
 && venv-pip install -q -r requirements.txt

# Then the project (a regular, non-editable install: /src is not in the final image).
COPY README.md ./
COPY proxy ./proxy
COPY appserver ./appserver
RUN venv-pip install -q --no-deps . \
 && venv-pip uninstall -q -y pip setuptools wheel \
 && cd / && /opt/venv/bin/python -c 'import proxy.app, appserver.app, appserver.demo_media'

# --- runtime -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="rangeproxy" \
      org.opencontainers.image.description="Reverse caching proxy for HTTP Range requests, and a demo media origin"

# /srv/media and /srv/downloads belong to `rangeproxy`, so the named volumes docker-compose.yml
# mounts there start out writable for the demo file generators.
RUN groupadd --system --gid 10001 rangeproxy \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rangeproxy --create-home \
        --shell /usr/sbin/nologin rangeproxy \
 && install -d -o rangeproxy -g rangeproxy -m 0755 /var/cache/rangeproxy /srv/media \
        /srv/downloads

COPY --from=build /opt/venv /opt/venv
# Baked-in defaults; docker-compose.yml mounts config/compose-proxy.toml over the first one.
COPY config/proxy.toml config/appserver.toml /etc/rangeproxy/

# The settings a container needs whatever config/proxy.toml says (precedence: command
# line > RANGEPROXY_* environment > config file > defaults): listen on all interfaces and
# keep the cache where the volume is. RANGEPROXY_UPSTREAM is set by whoever runs it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RANGEPROXY_CONFIG=/etc/rangeproxy/proxy.toml \
    RANGEPROXY_HOST=0.0.0.0 \
    RANGEPROXY_CACHE_DIR=/var/cache/rangeproxy

USER rangeproxy
WORKDIR /var/lib/rangeproxy
EXPOSE 8080 8081

# No curl in slim: Python fetches the health URL. HEALTHCHECK_URL (set for the appserver in
# docker-compose.yml) wins; otherwise the proxy's /healthz on $RANGEPROXY_PORT (8080).
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(os.environ.get('HEALTHCHECK_URL') or 'http://127.0.0.1:%s/healthz' % (os.environ.get('RANGEPROXY_PORT') or '8080'), timeout=4).read()"]

CMD ["python", "-m", "proxy"]
