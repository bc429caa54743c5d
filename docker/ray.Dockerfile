# cpsweep on Ray: the image of the Ray head and workers, the RayJob submitter and
# the `cpsweep serve` REST service. Build from the repository root (see docker/README.md):
#   docker build -f docker/ray.Dockerfile -t cpsweep/ray:0.1.0 .
#   docker build -f docker/ray.Dockerfile --build-arg BASE=rayproject/ray:2.60.0-py311-gpu \
#       -t cpsweep/ray-gpu:0.1.0 .
# The Ray version in BASE must equal the ray pin in constraints.txt and the RayCluster's
# rayVersion (tests/test_docker.py and tests/test_k8s.py check both).
ARG BASE=rayproject/ray:2.60.0-py311-cpu
# Pin both bases by digest for a release build (docker/README.md, "Pinning by digest"):
#   --build-arg BASE=rayproject/ray:2.60.0-py311-cpu@sha256:<digest>
#   --build-arg DEBIAN_IMAGE=debian:bookworm-slim@sha256:<digest>
ARG DEBIAN_IMAGE=debian:bookworm-slim

# Fashion-MNIST (the CPU-scale benchmark) comes from Debian's dataset-fashion-mnist
# package; the Ray images are Ubuntu-based, so take the IDX files from a Debian stage.
FROM ${DEBIAN_IMAGE} AS fashion-mnist
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

FROM ${BASE}
# Optional extra index for torch wheels, e.g. https://download.pytorch.org/whl/cpu builds
# a CPU image without the CUDA libraries. Empty: torch comes from PyPI.
ARG TORCH_INDEX_URL=""
COPY --from=fashion-mnist /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist

# Ray's images run as user `ray` (uid 1000, gid 100) with a Python in /home/ray/anaconda3
# that this user owns. Any other BASE (a plain Debian with python3 and python3-venv, as
# `make image-check` builds on where Docker Hub is out of reach) gets the same user and a
# venv it owns in /opt/venv, first on PATH. Either way /app belongs to that user, who
# installs everything below: nothing is pip-installed as root.
USER root
RUN if ! getent passwd 1000 > /dev/null; then \
        useradd --uid 1000 --gid 100 --create-home --home-dir /home/ray --shell /bin/bash ray; \
    fi \
 && if ! command -v pip > /dev/null; then \
        python3 -m venv /opt/venv && chown -R 1000:100 /opt/venv; \
    fi \
 && mkdir -p /app && chown 1000:100 /app
ENV PATH=/opt/venv/bin:$PATH
USER 1000:100
WORKDIR /app
COPY --chown=1000:100 constraints.txt pyproject.toml README.md ./
COPY --chown=1000:100 cpsweep/ cpsweep/
COPY --chown=1000:100 service/ service/
COPY --chown=1000:100 trainables/ trainables/
COPY --chown=1000:100 search_spaces/ search_spaces/
# -c constraints.txt keeps ray, torch and mlflow at exactly the versions CI tests.
# Editable (-e): the packages are imported from /app, so the project root that cpsweep
# ships to Ray as working_dir is /app, not site-packages.
RUN pip install --no-cache-dir -c constraints.txt \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -e . \
 && rm -rf build \
 && cd / && python -c "import cpsweep, service, trainables; assert cpsweep.__file__.startswith('/app/')" \
 && cpsweep --help > /dev/null

ENV PYTHONUNBUFFERED=1
# No ENTRYPOINT: KubeRay sets the Ray container's command, and the service and the
# RayJob submitter name theirs in k8s/.
