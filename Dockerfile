# divmon worker image: `docker build -t divmon .`; entrypoint `divmon`, default command `worker`.
# Configuration is DIVMON_* environment variables (streams/config.py); secrets come from the runtime
# (compose env / Kubernetes Secret), never from the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
# rocksdict: the production table store (DIVMON_STORE=rocksdb://).
RUN pip install ".[rocksdb]" \
    && useradd --system --uid 10001 --home-dir /var/lib/divmon --create-home divmon

USER divmon
# The Avro schemas ship inside the wheel (streams/schemas links to schemas/ and is package data).
ENV DIVMON_DATA_DIR=/var/lib/divmon \
    DIVMON_TAPES_DIR=/var/lib/divmon/tapes \
    DIVMON_CLICKHOUSE_PATH=/var/lib/divmon/chdb
VOLUME ["/var/lib/divmon"]
# 6066: Faust web (DIVMON_WEB_PORT); 9108: Prometheus metrics (DIVMON_METRICS_PORT).
EXPOSE 6066 9108

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('DIVMON_METRICS_PORT', '9108'), timeout=4)"

ENTRYPOINT ["divmon"]
CMD ["worker"]
