# syntax=docker/dockerfile:1
# fastgw's image: the Cython core is built in a builder stage; the runtime stage holds only the virtual
# environment (fastgw, its compiled core and its dependencies), runs as a non-root user and reads its
# config from a mounted file (FASTGW_CONFIG). Every `server` setting can also be set with a FASTGW_*
# variable (README "Deploying").
#
#   docker build -t fastgw .
#   docker run -p 8080:8080 -p 9901:9901 -v $PWD/gateway.yaml:/etc/fastgw/gateway.yaml:ro fastgw
#
# BASE: any Debian-based image with Python >= 3.11 (python3 -m venv must work). The default is the
# official slim image; tests/test_container.py builds on a local Debian rootfs (no registry there).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# A C compiler for the core (the slim image has Python's headers but no gcc).
RUN if ! command -v gcc >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python3 -m venv /opt/fastgw && /opt/fastgw/bin/pip install --no-cache-dir --upgrade pip
WORKDIR /src
# The dependencies first (a layer that survives source edits), then fastgw with its compiled core.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY src_ext ./src_ext
COPY fastgw ./fastgw
RUN /opt/fastgw/bin/pip install --no-cache-dir . \
    && cd / && /opt/fastgw/bin/python -c "import fastgw._core, fastgw.vtl._render, fastgw._lane" \
    && find /opt/fastgw -name '__pycache__' -prune -exec rm -rf {} +

FROM ${BASE}
LABEL org.opencontainers.image.title="fastgw" \
      org.opencontainers.image.description="A self-hosted API gateway that runs the AWS API Gateway model"
# A fixed, unprivileged uid (Kubernetes runAsNonRoot checks a numeric USER).
RUN (groupadd --system --gid 10001 fastgw && useradd --system --uid 10001 --gid fastgw --no-create-home \
        --home-dir /var/lib/fastgw --shell /usr/sbin/nologin fastgw) \
    && mkdir -p /etc/fastgw /var/lib/fastgw && chown fastgw:fastgw /var/lib/fastgw
COPY --from=build /opt/fastgw /opt/fastgw
ENV PATH=/opt/fastgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FASTGW_CONFIG=/etc/fastgw/gateway.yaml \
    FASTGW_ADMIN_HOST=0.0.0.0
WORKDIR /var/lib/fastgw
USER 10001:10001
# The data port (server.port, default 8080) and the admin port (9901; the probes' and HEALTHCHECK's):
# set them with FASTGW_PORT / FASTGW_ADMIN_PORT (variables beat the file; the HEALTHCHECK reads
# FASTGW_ADMIN_PORT). The admin API listens on every address of the container (FASTGW_ADMIN_HOST),
# so that probes from outside reach /readyz; /metrics and /reload need FASTGW_ADMIN_TOKEN.
EXPOSE 8080 9901
# SIGTERM: /readyz fails at once, in-flight requests get up to drainSeconds, then exit 0.
STOPSIGNAL SIGTERM
# Ready means every worker runs the current config and the data port accepts connections.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FASTGW_ADMIN_PORT', '9901'), timeout=2)"]
ENTRYPOINT ["fastgw"]
CMD ["serve"]
