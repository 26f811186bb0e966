# HAProxy for `docker compose --profile cluster up` (docker-compose.yml's `front`): Debian's
# package (HAProxy 2.6 on bookworm) on the same base as the rangeproxy image, so the build needs a
# Debian mirror and no Docker Hub image of HAProxy. The configuration is mounted, not baked in:
# config/haproxy-cluster.cfg at /etc/haproxy/haproxy.cfg.
#
#   docker build -f docker/haproxy.Dockerfile -t rangeproxy-haproxy .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && haproxy -v | head -n 1

# Not root: the front binds 8080 and 8404 (no privileged port) and writes nothing.
USER haproxy
EXPOSE 8080 8404
# The health check is the stats page answering (no curl in slim: Python fetches it).
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://%s/' % os.environ['STATS_HEALTH'], timeout=4).read()"]
# -W: master-worker (a SIGUSR2 reloads the file); -db: in the foreground, for Docker.
CMD ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
