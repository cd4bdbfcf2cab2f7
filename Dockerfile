# One image for every wf service: slim Python, no dev dependencies, a non-root user. The dependencies are
# the exact versions and hashes of requirements-runtime.lock (`make lock` regenerates it with requirements.lock).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WF_CONFIG_DIR=/app/configs \
    WF_INVENTORY_DIR=/app/data

RUN useradd --create-home --uid 10001 wf
WORKDIR /app
COPY requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY services ./services
COPY wf ./wf
RUN pip install --no-deps . && rm -rf build
COPY configs ./configs
COPY data ./data
COPY examples ./examples

USER wf
CMD ["wf", "--help"]
