# Nabla's container image: `nabla serve` on 0.0.0.0:8000 as an unprivileged user.
#
#   docker build -t nabla .
#   docker run -p 8000:8000 -v nabla-data:/var/lib/nabla/data nabla
#
# Stage 1 builds wheels for Nabla and all its dependencies; stage 2 installs them with
# `--no-index`, so the runtime stage never touches the network. Behind a proxy that the build
# cannot get through (for example one that intercepts TLS with a CA only the host trusts), build
# the wheels on the host first, with the image's Python version (3.11 for the default base), and
# the first stage uses them instead of an index:
#
#   python3.11 -m pip wheel --wheel-dir wheelhouse '.[service]' 'setuptools>=69' wheel
#   docker build -t nabla .
#
# The base image must be a Debian-like image with Python 3.11+ (`python3 -m venv` working) and
# `useradd`; CI builds this file on a base image it makes itself with debootstrap
# (deploy/ci/container-check.sh), with `--build-arg BASE_IMAGE=...`.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- stage 1: wheels
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/build
WORKDIR /src
COPY . .
# A local wheelhouse/ (built on the host) means: no network at all in this stage either.
RUN set -eu; \
    if ls wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "building from the local wheelhouse, without an index"; \
        /opt/build/bin/pip wheel --no-index --find-links wheelhouse --wheel-dir /wheels '.[service]'; \
    else \
        /opt/build/bin/pip wheel --wheel-dir /wheels '.[service]'; \
    fi; \
    ls /wheels

# ---------------------------------------------------------------- stage 2: runtime
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="nabla" \
      org.opencontainers.image.description="Gradients as a service" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/nabla/bin:$PATH \
    NABLA_HOST=0.0.0.0 \
    NABLA_PORT=8000 \
    NABLA_WORKERS=1 \
    NABLA_DATA_DIR=/var/lib/nabla/data
# Installed offline from the first stage's wheels, which are bind-mounted, not copied into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    set -eu; \
    python3 -m venv /opt/nabla; \
    /opt/nabla/bin/pip install --no-index --find-links /tmp/wheels 'nabla[service]'; \
    /opt/nabla/bin/nabla --help >/dev/null; \
    useradd --system --uid 10001 --user-group --home-dir /var/lib/nabla --no-create-home \
        --shell /usr/sbin/nologin nabla; \
    mkdir -p /var/lib/nabla/data; \
    chown -R 10001:10001 /var/lib/nabla

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/nabla
# The SQLite model registry (unused when NABLA_DATABASE_URL points at PostgreSQL).
VOLUME ["/var/lib/nabla/data"]
EXPOSE 8000
# No curl in the image: the service's own Python asks /livez.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('NABLA_PORT', '8000'), timeout=4)"]
# Host, port, workers and every other setting come from NABLA_* variables (README, "Settings").
ENTRYPOINT ["nabla", "serve"]
