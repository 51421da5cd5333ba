# The opsctl image for exported Jobs and Argo workflows (docs/export.md).
#
#   python -m build --wheel            # or: pip wheel --no-deps -w dist .
#   docker build -t registry.example.com/opsctl:0.1.0 .
#
# Slim and pinned: the base image by exact version (and digest, see BASE), every dependency by
# constraints.txt, opsctl itself from the wheel in dist/ (never built in the image).
# Non-root, a read-only root filesystem works: state goes to /var/lib/opsctl (an emptyDir in the
# exported manifests), nothing is written elsewhere.
# Not built in the tests (no container runtime there); the manifests that run it are.

# The exact Python of the tests (3.11.7). Pin the digest too when building for production:
#   docker build --build-arg BASE=python:3.11.7-slim-bookworm@sha256:<digest> .
# (`docker buildx imagetools inspect python:3.11.7-slim-bookworm` prints it.)
ARG BASE=python:3.11.7-slim-bookworm
FROM ${BASE} AS install
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY constraints.txt /tmp/constraints.txt
COPY dist/opsctl-*.whl /tmp/dist/
RUN python -m venv /opt/opsctl \
 && /opt/opsctl/bin/pip install --no-compile -c /tmp/constraints.txt /tmp/dist/opsctl-*.whl \
 && /opt/opsctl/bin/opsctl --version

FROM ${BASE}
ENV PATH=/opt/opsctl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    OPSCTL_STATE_DIR=/var/lib/opsctl HOME=/var/lib/opsctl
COPY --from=install /opt/opsctl /opt/opsctl
RUN groupadd --gid 10001 opsctl \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/opsctl --shell /usr/sbin/nologin opsctl \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/opsctl
USER 10001:10001
WORKDIR /var/lib/opsctl
ENTRYPOINT ["opsctl"]
CMD ["--help"]
