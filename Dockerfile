# One image, three programs: the aggregator (the default command), `aggregator-sim` and
# `aggregator-tui`. compose.yaml runs each with its own command.

# ---- build: every wheel the programs need, ours included ----------------------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
COPY simulator ./simulator
COPY tui ./tui
# The postgres extra too: one image serves both stores (AGGREGATOR_DATABASE_URL chooses).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

# ---- runtime: the installed wheels, no build stage tools, not root ------------------------------
FROM python:3.11-slim AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The wheels are bind-mounted from the build stage, so no layer of this image keeps them (a
# BuildKit mount: the builder of `docker compose` and of Docker 23+, or DOCKER_BUILDKIT=1 on 20.10;
# the built-in frontend has it, so no `# syntax=` line, which would need a registry). They are
# exactly the resolved set for ".[postgres]"; --no-index proves nothing else is needed.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl

# A fixed uid/gid, so a bind-mounted data directory can be chowned to match (10001:10001).
# No VOLUME: /data is a volume where the aggregator runs (compose.yaml's aggregator-data, or
# `docker run -v NAME:/data`), filled from this directory and so owned by 10001 from the start;
# declared here, it would give every container of the image an anonymous volume of its own.
RUN groupadd --system --gid 10001 aggregator \
    && useradd --system --uid 10001 --gid aggregator --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin aggregator \
    && mkdir /data \
    && chown aggregator:aggregator /data

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGGREGATOR_HOST=0.0.0.0 \
    AGGREGATOR_PORT=8080 \
    AGGREGATOR_DATA_DIR=/data

USER 10001:10001
WORKDIR /data
EXPOSE 8080

# Standard library only; any failure (refused, timeout, a 503 from /health) raises, so exit 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('AGGREGATOR_PORT', '8080') + '/health', timeout=4)"]

# Exec form: the program is PID 1 and gets the stop signal itself. SIGINT, not SIGTERM: the
# kernel drops a signal PID 1 has no handler for, and Python handles SIGINT from its first
# instruction, while the simulator and the dashboard never handle SIGTERM and the server only
# once it runs (~1 s of imports). With SIGTERM, `docker stop` in those moments waited out the
# grace period and SIGKILLed (137; the dashboard's terminal left in its alternate screen).
# The server treats SIGINT exactly as SIGTERM: it drains, closes the store and exits 0.
STOPSIGNAL SIGINT
CMD ["aggregator"]
