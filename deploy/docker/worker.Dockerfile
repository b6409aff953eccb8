# syntax=docker/dockerfile:1
# The FreeCAD worker (gRPC 50053, health only): Debian's FreeCAD 0.20, whose modules are built
# for Debian's python3 (3.11); the worker runs on that same interpreter, in a venv.
# Built from the repository root (the context), with the ignore file beside this one:
#
#   docker build -f deploy/docker/worker.Dockerfile -t cadpipe/worker:0.1.0 .

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The runtime dependencies at the locked versions, in a layer that changes only with them.
COPY pyproject.toml requirements.lock ./
RUN python3 -m venv /opt/cadpipe \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/runtime.txt \
 && /opt/cadpipe/bin/pip install -c requirements.lock -r /tmp/runtime.txt
# protoc stays in this stage: a venv of its own, not copied into the image.
RUN python3 -m venv /opt/protoc \
 && /opt/protoc/bin/pip install -c requirements.lock grpcio-tools googleapis-common-protos
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/
COPY cadpipe/ cadpipe/
COPY services/ services/
# The protobuf code is generated here, never taken from the build context.
RUN /opt/protoc/bin/python scripts/gen_protos.py \
 && /opt/cadpipe/bin/pip install --no-deps . \
 && /opt/cadpipe/bin/python -m compileall -q /opt/cadpipe/lib

FROM ${DEBIAN_IMAGE}
# freecad (freecadcmd and its Python modules, without the GUI's recommends); python3 is the
# interpreter the venv above links to; tini reaps whatever a job leaves behind and passes
# SIGTERM on; util-linux (unshare, setpriv) is part of the base.
RUN apt-get update \
 && apt-get install -y --no-install-recommends freecad python3 tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && freecadcmd --version
COPY --from=build /opt/cadpipe /opt/cadpipe
# HOME on the writable /tmp: FreeCAD keeps per-user files there (jobs get their own HOME).
ENV PATH=/opt/cadpipe/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
# Root, on purpose: the worker starts each job in new namespaces and drops it to an
# unprivileged uid of its own, which needs root with a few capabilities (SYS_ADMIN, SETUID,
# SETGID, KILL, CHOWN; the Deployment drops all others). The worker never runs user code
# itself. See docs/operations.md, "The worker's sandbox".
USER 0:0
EXPOSE 50053 9090
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "services.worker"]
