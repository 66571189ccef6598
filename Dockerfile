# json-engine worker image.
#   docker build -t json-engine .
#   docker run --rm -e KAFKA_BOOTSTRAP_SERVERS=broker:9092 -v out:/data/output json-engine
# The entrypoint is `json-engine worker`; the config is /etc/json-engine/config.yaml
# (JSON_ENGINE_CONFIG), every key overridable with JSON_ENGINE__SECTION__KEY variables.
# Other commands: --entrypoint json-engine … (for example `topics create`).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the package and its dependencies -----------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PREFER_BINARY=1

# Compilers only here, for a dependency without a wheel for this platform; the final stage
# copies the virtualenv alone. (Unpinned: any Debian gcc builds these extensions.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first: this layer stays cached while only the sources change.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY streams ./streams
COPY sinks ./sinks
COPY schemas ./schemas
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv \
    && json-engine --help >/dev/null

# --- final: the runtime only, as a non-root user -----------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="json-engine" \
      org.opencontainers.image.description="Kafka stream pipeline for AI engine events: validated, exactly-once JSONL sinks" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 json-engine \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/json-engine \
       --create-home --shell /usr/sbin/nologin json-engine \
    && mkdir -p /etc/json-engine /data/output /data/models \
    && chown -R 10001:10001 /data \
    && printf '%s\n' \
       '# Defaults of the image; mount another file here or override with JSON_ENGINE__* variables.' \
       'json_engine:' \
       '  output: {base_path: /data/output}' \
       '  models: {path: /data/models}' \
       '  metrics: {port: 9100}' \
       > /etc/json-engine/config.yaml

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JSON_ENGINE_CONFIG=/etc/json-engine/config.yaml

WORKDIR /home/json-engine
# Shared output: mount one volume (or ReadWriteMany claim) into every worker.
VOLUME ["/data/output"]
# Prometheus metrics, /livez and /readyz.
EXPOSE 9100

USER 10001:10001

# The port follows JSON_ENGINE__METRICS__PORT when it is overridden.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('JSON_ENGINE__METRICS__PORT', '9100'), timeout=4)"]

# SIGTERM stops gracefully (flushes and finishes the part files): give it time (stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["json-engine", "worker"]
