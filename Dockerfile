# syntax=docker/dockerfile:1
# tsbatch image: one image for the worker (default), Flower and the producer.
#   docker build -t tsbatch:local .
#   docker run --rm tsbatch:local --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Unprivileged runtime user. Override the ids with --build-arg to match the owner of
# mounted telemetry or secret files on the host.
ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid "${GID}" tsbatch \
 && useradd --system --uid "${UID}" --gid tsbatch \
        --create-home --home-dir /home/tsbatch --shell /usr/sbin/nologin tsbatch

# Only what `pip install .` needs: the metadata and the four top-level packages
# (see [tool.setuptools.packages.find] in pyproject.toml). README* may be absent.
WORKDIR /tmp/build
COPY pyproject.toml README* ./
COPY config/ config/
COPY producers/ producers/
COPY workers/ workers/
COPY tsbatch/ tsbatch/
RUN pip install --no-cache-dir . \
 && cd / \
 && rm -rf /tmp/build

USER tsbatch
WORKDIR /home/tsbatch

# Exec form: tsbatch is the process that receives SIGTERM on `docker stop`,
# so a Celery worker does a warm shutdown (finishes in-flight chunks).
ENTRYPOINT ["tsbatch"]
CMD ["worker"]
