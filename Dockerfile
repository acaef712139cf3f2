# mmbot, the market maker, as a container image.
#
#   docker build --build-arg MMBOT_COMMIT="$(git rev-parse HEAD)" -t mmbot .
#   docker run -d --name mmbot \
#     -v "$PWD/production.toml:/etc/mmbot/config.toml:ro" \
#     -v mmbot-journal:/var/lib/mmbot \
#     -e MMBOT_KALSHI__KEY_ID -e MMBOT_KALSHI__PRIVATE_KEY_PATH=/run/secrets/kalshi.pem \
#     -p 127.0.0.1:9100:9100 mmbot
#
# Dependencies come from requirements.lock (hashes required) and the install commands live in
# docker/install.sh, which .ci/image-check also runs.

# Both stages must use the same image: the virtualenv links to the builder's interpreter.
FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Copied apart from the code so that a code change reuses the dependency layer.
COPY docker/install.sh docker/build-requirements.lock docker/
COPY requirements.lock ./
RUN docker/install.sh deps /opt/venv

COPY pyproject.toml README.md ./
COPY mmbot mmbot
COPY strategies strategies
RUN docker/install.sh app /opt/venv

# The commit built, for `mmbot --version` and the mmbot_build_info metric: the build context
# holds no .git, so it comes in as a build argument and is stamped into the installed package
# (mmbot/_commit.txt). Without it the image reports "unknown"; anything but 7 to 64 hex
# digits fails the build. Declared after the install, so that the argument leaves the
# cached dependency layer alone; -I imports the installed package, not the source in the
# working directory.
ARG MMBOT_COMMIT=""
RUN /opt/venv/bin/python -I -m mmbot.buildinfo stamp "$MMBOT_COMMIT"


FROM python:3.11.13-slim-bookworm

LABEL org.opencontainers.image.title="mmbot" \
      org.opencontainers.image.description="Automated market maker for Kalshi's RFQ rail" \
      org.opencontainers.image.licenses="Proprietary" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.13-slim-bookworm"

# A system user without a login shell or a home: the daemon writes only its journal
# (/var/lib/mmbot) and reads the kill-switch file (/var/run/mmbot/STOP).
RUN groupadd --system --gid 10001 mmbot \
    && useradd --system --uid 10001 --gid mmbot --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mmbot \
    && mkdir -p /etc/mmbot /var/lib/mmbot /var/run/mmbot \
    && chown mmbot:mmbot /var/lib/mmbot /var/run/mmbot

COPY --from=builder /opt/venv /opt/venv

# The same commit as image metadata (`docker inspect`); empty when none was given.
ARG MMBOT_COMMIT=""
LABEL org.opencontainers.image.revision="$MMBOT_COMMIT"

# MMBOT_CONFIG lets every other command (healthcheck, check-config, quotes cancel-all run
# through `docker exec`) read the same file as the default command.
# The metrics server listens on all interfaces so Prometheus can scrape it from another
# container; outside a container the default stays loopback.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MMBOT_CONFIG=/etc/mmbot/config.toml \
    MMBOT_METRICS__HOST=0.0.0.0 \
    MMBOT_JOURNAL__PATH=/var/lib/mmbot/journal.sqlite

VOLUME ["/var/lib/mmbot"]
WORKDIR /var/lib/mmbot
EXPOSE 9100

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# Ready means subscribed with fresh market data; start-period covers the connect and the first
# market-data fetch. The timeout leaves room for the interpreter start plus the 2 s request.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["mmbot", "healthcheck"]

# Exec form: mmbot is PID 1 and receives SIGTERM from `docker stop` itself, and withdraws
# its quotes (shutdown.timeout_seconds) before exiting.
ENTRYPOINT ["mmbot"]
CMD ["run", "--config", "/etc/mmbot/config.toml"]
