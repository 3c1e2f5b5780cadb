# Cortex, production image: python:3.11-slim, dependencies built in a separate stage, run as a
# non-root user with tini as PID 1 and gunicorn (gevent workers) as its child.
#
#   docker build -t cortex .
#   docker run --rm -p 4000:4000 cortex                      # the demo provider answers
#   docker run --rm -p 4000:4000 -e GROQ_API_KEYS=gsk_... cortex
#
# Every setting is an environment variable (README: Configuration, Operating Cortex, Deploying).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the pinned requirements in a virtualenv ----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Binary wheels only (gevent, greenlet and the rest publish them for CPython 3.11 on
# x86_64 and aarch64), so the image needs no compiler.
RUN /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# tini is PID 1: it forwards SIGTERM to gunicorn's master (which then drains the streams for
# GRACEFUL_TIMEOUT) and reaps zombies; gunicorn itself never runs as PID 1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it (deploy/k8s/deployment.yaml).
RUN groupadd --system --gid 10001 cortex \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin cortex

COPY --from=build /opt/venv /opt/venv

# Only what runs: the app, the adapters, the page's template, the WSGI entry point and the
# server settings (see .dockerignore; tests, bench and deploy files stay out).
WORKDIR /app
COPY requirements.txt wsgi.py gunicorn.conf.py ./
COPY app/ app/
COPY providers/ providers/
COPY templates/ templates/
# Byte-compile now: at run time the root filesystem may be read-only.
RUN python -m compileall -q app providers wsgi.py gunicorn.conf.py

# HOST=0.0.0.0: gunicorn.conf.py listens on loopback unless told otherwise, which in a
# container would serve nobody. The state directory (CORTEX_STATE_DIR unset: a fresh one
# under /tmp) must be writable: mount an emptyDir or tmpfs on /tmp with a read-only root.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=4000

USER 10001:10001
EXPOSE 4000

# "The process answers": /api/health returns 200, or 503 when no upstream can answer right now.
# Both mean Cortex is up; a 503 is the upstreams' state, not this container's, so it must not
# mark the container unhealthy (README: Deploying, probes). Standard library only: the slim
# image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-I", "-S", "-c", "import json,os,sys,urllib.error as e,urllib.request as u\ntry: r=u.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT','4000'),timeout=4)\nexcept e.HTTPError as x: r=x\nsys.exit(0 if r.status in (200,503) and 'status' in json.load(r) else 1)"]

# docker stop / Kubernetes send SIGTERM: gunicorn stops accepting, lets streams finish for
# GRACEFUL_TIMEOUT (default 60 s), then ends the rest with the shutting_down marker. Give the
# container more than that before SIGKILL (docker stop -t 75, stop_grace_period,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
