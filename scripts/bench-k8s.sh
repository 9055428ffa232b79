#!/usr/bin/env bash
# The operator's benchmark (operator/benches/k8s.rs, a release build) on a private control plane
# and moto, as scripts/test-k8s.sh starts and stops them: the time from `kubectl apply` of an
# LfusysCluster to all its children created and to Available=True, and from a change of the
# SQS queue depth to the new replica count of the uploads Deployment. Arguments go to the bench
# binary (see its --help).
exec bash "$(dirname "$0")/test-k8s.sh" --bench -- "$@"
