# syntax=docker/dockerfile:1
# Observer's production image: web, workers, beat, Flower and migrate all run from it
# (docker-compose.yml). Runtime dependencies only, from the hashed lock; runs as a non-root
# user; docker/entrypoint.sh prepares the Prometheus multiprocess directory.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The browser SDK, built with its locked npm dependencies. The app does not serve it, so the
# runtime image does not contain it: `docker build --target sdk-dist --output sdk-dist .`
# exports the bundles for a CDN or your own static host.
FROM node:20-bookworm-slim AS sdk
WORKDIR /build/sdk
COPY sdk/package.json sdk/package-lock.json ./
RUN npm ci --no-audit --no-fund
# The SDK's privacy rules are generated from the server's rules file at build time.
COPY app/ingest/privacy_rules.json /build/app/ingest/
COPY sdk/ ./
RUN npm run build

FROM scratch AS sdk-dist
COPY --from=sdk /build/sdk/dist/ /

# Runtime dependencies into a virtualenv: exactly the lock (--no-deps: pip resolves nothing
# itself), every file checked against its hashes, wheels only (no compiler in the image);
# `pip check` fails the build when the lock misses a dependency.
FROM ${PYTHON_IMAGE} AS deps
RUN python -m venv /opt/venv
COPY requirements/runtime.txt /tmp/runtime.txt
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      --require-hashes --no-deps --only-binary=:all: -r /tmp/runtime.txt \
 && /opt/venv/bin/pip check --disable-pip-version-check

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 observer \
 && useradd --system --uid 10001 --gid observer --home-dir /srv --no-create-home \
      --shell /usr/sbin/nologin observer
COPY --from=deps /opt/venv /opt/venv
WORKDIR /srv
# What the processes read, owned by root (read-only to the app user). No SDK (the app does
# not serve it), no tests, no dev tooling; .dockerignore keeps var/ (the dev UFSE secret and
# key), .venv, node_modules and .git out of the build context altogether.
COPY celeryconfig.py gunicorn.conf.py flowerconfig.py ./
COPY docker/ docker/
COPY app/ app/
COPY tasks/ tasks/
COPY devtools/__init__.py devtools/sink.py devtools/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/srv/docker/entrypoint.sh"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
