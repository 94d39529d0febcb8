# The watcher and the API in one image; docker-compose.yml runs it twice
# (`watcher run --no-api` and `watcher api`). Uses DATABASE_URL: no embedded PostgreSQL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WATCHER_DATA_DIR=/var/lib/usdc-watcher \
    WATCHER_LOG_FORMAT=json

RUN groupadd --system --gid 10001 watcher \
    && useradd --system --uid 10001 --gid watcher --home-dir /var/lib/usdc-watcher \
       --shell /usr/sbin/nologin watcher \
    && install -d -o watcher -g watcher -m 0700 /var/lib/usdc-watcher

WORKDIR /app
# Dependencies first so code edits do not reinstall them.
COPY pyproject.toml README.md LICENSE ./
COPY watcher/__init__.py watcher/__init__.py
COPY api/__init__.py api/__init__.py
RUN pip install . && pip uninstall -y usdc-watcher
# watcher/ carries sql/, the named queries (package data, read via importlib.resources);
# setup.py copies migrations/ into the wheel as watcher/migrations/.
COPY setup.py MANIFEST.in ./
COPY watcher watcher
COPY api api
COPY migrations migrations
RUN pip install --no-deps . && rm -rf build

USER watcher
EXPOSE 8000 9102
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9102/metrics', timeout=4)" \
        || python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["watcher"]
CMD ["run", "--no-api"]
