# syntax=docker/dockerfile:1
# The tensorwire image: the `tensorwire` command (task server, data-service dispatcher and
# worker) with the grpc transport and the data service, running as an unprivileged user.
#
#   docker build -t tensorwire:0.1.0 .
#   docker run --rm tensorwire:0.1.0                      # tensorwire info
#   docker run --rm tensorwire:0.1.0 dispatcher --help
#
# deploy/kubernetes/ runs this image; its containers give only `args` (the subcommand and
# its flags), so the ENTRYPOINT below is part of the recipe, and tests/deploy checks both.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: wheels of the three distributions a server needs, the core's codec compiled ------
FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Each distribution reads the one version number through a symlink to ../../VERSION.
COPY VERSION ./
COPY packages/core ./packages/core
COPY packages/transport-grpc ./packages/transport-grpc
COPY packages/dataservice ./packages/dataservice
RUN pip wheel --no-cache-dir --wheel-dir /wheels \
        ./packages/core ./packages/transport-grpc ./packages/dataservice

# -- runtime: the wheels installed, no compiler, no sources ------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 tensorwire \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/tensorwire tensorwire \
    && mkdir -p /var/lib/tensorwire \
    && chown 10001:10001 /var/lib/tensorwire
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        tensorwire tensorwire-grpc tensorwire-dataservice \
    && rm -rf /tmp/wheels
# The examples the recipes run (the parameter-server driver, the data-service reader).
COPY examples /opt/tensorwire/examples
ENV PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/tensorwire
ENTRYPOINT ["tensorwire"]
CMD ["info"]
