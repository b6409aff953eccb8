# syntax=docker/dockerfile:1
# The generator (gRPC 50054): text to CAD, every attempt uploaded through the script service.
# Built from the repository root (the context), with the ignore file beside this one:
#
#   docker build -f deploy/docker/generator.Dockerfile -t cadpipe/generator:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The runtime dependencies at the locked versions, in a layer that changes only with them.
COPY pyproject.toml requirements.lock ./
RUN python -m venv /opt/cadpipe \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/runtime.txt \
 && /opt/cadpipe/bin/pip install -c requirements.lock -r /tmp/runtime.txt
# protoc stays in this stage: a venv of its own, not copied into the image.
RUN python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install -c requirements.lock grpcio-tools googleapis-common-protos
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/
COPY cadpipe/ cadpipe/
COPY services/ services/
# The protobuf code is generated here, never taken from the build context.
RUN /opt/protoc/bin/python scripts/gen_protos.py \
 && /opt/cadpipe/bin/pip install --no-deps . \
 && /opt/cadpipe/bin/python -m compileall -q /opt/cadpipe/lib

FROM ${PYTHON_IMAGE}
# A numeric user, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 cadpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin cadpipe
COPY --from=build /opt/cadpipe /opt/cadpipe
ENV PATH=/opt/cadpipe/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 50054 9090
ENTRYPOINT ["python", "-m", "services.generator"]
