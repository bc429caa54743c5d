# MLflow tracking server with the PostgreSQL driver. Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t cpsweep/mlflow:0.1.0 .
# MLFLOW_VERSION must equal the mlflow pin in constraints.txt (tests/test_docker.py checks).
# Pin the base by digest for a release build (docker/README.md, "Pinning by digest"):
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13

RUN groupadd --system --gid 10001 mlflow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/mlflow --create-home mlflow \
 && mkdir -p /mlartifacts \
 && chown 10001:10001 /mlartifacts

COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt \
        "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" \
 && rm /tmp/constraints.txt

USER 10001:10001
WORKDIR /home/mlflow
ENV PYTHONUNBUFFERED=1
EXPOSE 5000
# Credentials never live in the image: k8s/base/mlflow.yaml passes the database user and
# password as PGUSER/PGPASSWORD from a Secret (libpq reads them), and the basic-auth
# admin (the [auth] extra: `mlflow server --app-name basic-auth`) the same way.
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
