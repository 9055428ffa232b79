#!/usr/bin/env bash
# The test suites on the AWS backends: starts moto (S3, DynamoDB, SQS) and MinIO (a real S3
# server) on loopback, runs the system tests, the storage ports' conformance suite and the
# AWS-specific tests against them, and stops the servers. Part of scripts/test.sh; runs alone
# when only the AWS backends are of interest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/cargo-set.sh
source scripts/cargo-set.sh
step() { printf '\n==> %s\n' "$*"; }

step "AWS backends: moto (S3, DynamoDB, SQS) and MinIO on loopback (scripts/aws-servers.sh)"
# In a subshell: the servers' AWS_* settings stay out of the other steps, and the trap stops
# the servers however the tests end.
(
  trap 'bash scripts/aws-servers.sh stop' EXIT
  bash scripts/aws-servers.sh start
  eval "$(bash scripts/aws-servers.sh env)"
  # One build of the command's tests (with the AWS-specific ones) serves both runs below.
  step "system tests again, on the AWS backends"
  LFUSYS_TEST_BACKEND=aws cargo test "${CARGO_SET[@]}" --release --test commands -- system:: crash_points:: chaos:: --test-threads="${LFUSYS_TEST_THREADS:-2}"
  step "the storage ports' conformance suite and the AWS adapters' own tests"
  cargo test "${CARGO_SET[@]}" --release --test aws -- --test-threads="${LFUSYS_TEST_THREADS:-2}"
  step "AWS-specific system tests"
  cargo test "${CARGO_SET[@]}" --release --test commands -- aws:: --test-threads="${LFUSYS_TEST_THREADS:-2}"
)

