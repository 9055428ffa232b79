#!/usr/bin/env bash
# The web app (frontend/): npm ci, ESLint, tsc, Vitest, the production build, then the end-to-end
# test in Debian's headless Chromium against a real `lfusys up` (the release binary, as the test
# suite builds it; built if missing), and the tus / IETF end-to-end tests once more on the AWS
# backends (MinIO, moto: scripts/aws-servers.sh), with the Uppy one. Installs Debian's chromium when
# /usr/bin/chromium is missing (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh

step() { printf '\n==> %s\n' "$*"; }

step "web app: npm ci"
(cd frontend && npm ci --no-audit --no-fund)

step "web app: eslint"
(cd frontend && npm run --silent lint)

step "web app: tsc --noEmit"
(cd frontend && npm run --silent typecheck)

step "web app: vitest (unit tests)"
(cd frontend && npm run --silent test)

step "web app: vite build"
(cd frontend && npm run --silent build)

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM_PATH:-}" ]; then
  step "installing Debian's chromium for the end-to-end test"
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: run 'apt-get update && apt-get install -y chromium' as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

step "the lfusys binary for the end-to-end test (the system tests' build, scripts/cargo-set.sh)"
build_release --test commands

step "web app: end to end in headless Chromium (playwright-core)"
(cd frontend && npm run --silent e2e)

step "web app: the tus, IETF and Uppy end-to-end tests again, on the AWS backends (MinIO for S3, moto for DynamoDB and SQS)"
# In a subshell: the servers' AWS_* settings stay out of the rest, and the trap stops them.
(
  trap 'bash scripts/aws-servers.sh stop' EXIT
  bash scripts/aws-servers.sh start
  eval "$(bash scripts/aws-servers.sh env)"
  (cd frontend && LFUSYS_E2E_BACKEND=aws node --test --test-concurrency=1 e2e/tus.e2e.test.mjs e2e/uppy.e2e.test.mjs)
)
