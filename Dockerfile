# syntax=docker/dockerfile:1
#
# Retcon's two images, from one build:
#
#   docker build --target operator    -t <registry>/retcon-operator:<tag>    .
#   docker build --target step-runner -t <registry>/retcon-step-runner:<tag> .
#
# `operator` (the last stage, so also what a plain `docker build .` makes) runs
# `retcon-operator`; the Helm chart in charts/retcon deploys it.
# `step-runner` is the base image for function steps: it has `python -m
# retcon_runner` and nothing of the operator's dependencies (the runner uses the
# standard library only). Build your step image on it:
#
#   FROM <registry>/retcon-step-runner:<tag>
#   USER root
#   COPY . /src
#   RUN pip install --no-cache-dir /src && rm -rf /src
#   USER 65532
#
# (or COPY a plain package into /app, the working directory, which is on
# sys.path). Both images run as UID 65532 and write only to $TMPDIR and $HOME, so
# they work with readOnlyRootFilesystem and a writable emptyDir for TMPDIR and HOME
# (the chart mounts one and points both there).

ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# --- build: one wheel of the project, and the operator's virtualenv ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (pyproject's package roots), so edits elsewhere
# (tests, docs, the chart) keep this layer cached.
COPY pyproject.toml README.md LICENSE ./
COPY operator/ operator/
COPY step_runner/ step_runner/
COPY hack/localkube/ hack/localkube/
COPY examples/ examples/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/retcon \
 && /opt/retcon/bin/pip install /wheels/retcon-*.whl

# --- the shared runtime base: a non-root user, no bytecode writes ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# A named user, so that getpass.getuser() (kopf's peer identity, among others) works.
RUN groupadd --gid 65532 retcon \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin retcon

# --- step-runner ---------------------------------------------------------------------------
FROM runtime AS step-runner
COPY --from=build /wheels /tmp/wheels
# --no-deps: the runner needs the standard library only; the operator's code comes
# along in the same wheel but none of its dependencies do.
RUN pip install --no-deps /tmp/wheels/retcon-*.whl \
 && rm -rf /tmp/wheels \
 && python -m retcon_runner --help > /dev/null
WORKDIR /app
USER 65532:65532
ENTRYPOINT ["python", "-m", "retcon_runner"]
CMD ["--help"]

# --- operator ------------------------------------------------------------------------------
FROM runtime AS operator
COPY --from=build /opt/retcon /opt/retcon
ENV PATH=/opt/retcon/bin:$PATH
USER 65532:65532
# Webhook (TLS), metrics, health probes.
EXPOSE 9443 9090 8080
ENTRYPOINT ["retcon-operator"]
