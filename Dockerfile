# One image per service, all from this file: `docker build --build-arg SERVICE=contact --build-arg PORT=8081 .`
# (docker-compose.yml passes both). Built from the repository root so the workspace's one lock file pins every
# dependency; uv installs spm-<SERVICE> and what it needs, no more, and no other service's code. SERVICE=all
# installs every service: compose's db-init, whose `spm-admin bootstrap` applies each service's migrations as
# the schema's owner (a service's own login may not change its schema).
ARG SERVICE
ARG PORT

FROM python:3.11.11-slim-bookworm AS build
ARG SERVICE
RUN test -n "$SERVICE" || (echo "build with --build-arg SERVICE=contact|orders|notifier|audit|console|all" >&2; exit 1)
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, from the lock file only, so a code change does not reinstall them. uv reads every
# workspace member's pyproject.toml to know the workspace, so all of them come in.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/contact/pyproject.toml services/contact/
COPY services/orders/pyproject.toml services/orders/
COPY services/notifier/pyproject.toml services/notifier/
COPY services/audit/pyproject.toml services/audit/
COPY services/console/pyproject.toml services/console/
RUN uv sync --frozen --no-dev --no-install-workspace $(test "$SERVICE" = all && echo --all-packages || echo --package "spm-${SERVICE}")
COPY libs/common libs/common
# Every service's code is in the build stage; only what uv installs (non-editable) reaches the image.
COPY services services
RUN uv sync --frozen --no-dev --no-editable $(test "$SERVICE" = all && echo --all-packages || echo --package "spm-${SERVICE}")

FROM python:3.11.11-slim-bookworm
ARG SERVICE
ARG PORT
RUN groupadd --system --gid 10001 spm \
    && useradd --system --uid 10001 --gid spm --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin spm
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    SPM_SERVICE=${SERVICE} \
    SPM_HTTP_HOST=0.0.0.0 \
    SPM_LOG_FORMAT=json
USER 10001:10001
EXPOSE ${PORT}
# exec: the service itself is PID 1 and receives SIGTERM from `docker stop` (it drains, then exits).
CMD ["sh", "-c", "exec \"spm-${SPM_SERVICE}\""]
