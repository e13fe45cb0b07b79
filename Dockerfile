# The recommender worker (Faust app + HTTP API). Used by docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1

WORKDIR /srv
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY app ./app
RUN pip install -c requirements.lock . \
 && useradd --system --uid 10001 --home-dir /data recsys \
 && mkdir -p /data/worker && chown -R recsys /data

USER recsys
ENV RECSYS_DATA_DIR=/data/worker \
    RECSYS_WEB_BIND=0.0.0.0 \
    RECSYS_WEB_PORT=6066
VOLUME ["/data"]
EXPOSE 6066
CMD ["python", "-m", "app", "worker", "-l", "info"]
