#!/usr/bin/env bash
# Checks the Helm chart charts/lfusys-operator, offline:
#   1. helm lint --strict, with the default values and with an LfusysCluster / a watchNamespace;
#   2. values.schema.json refuses bad values (helm template must fail, naming the value);
#   3. the rendered manifests hold what the chart promises (non-root, read-only root filesystem,
#      no wildcard or Pod permissions, the default images, ...);
#   4. against a real, private Kubernetes control plane (scripts/k8s-cluster.sh, on its own ports
#      and state directory, so it never touches a cluster someone else started):
#      - helm install (CRD from crds/, operator, an LfusysCluster) into a namespace that enforces
#        the "restricted" Pod Security Standard; kwok runs the operator's Pod, helm --wait sees
#        the Deployment available; the API server filled in the CRD's defaults;
#      - kubectl apply --dry-run=server --validate=strict of every rendered variant: the real API
#        server's schema check (unknown or misplaced fields are errors), the CRD's OpenAPI schema
#        and CEL rules included;
#      - specs the CRD must refuse (CEL rules, patterns) are refused, with the rule's message;
#      - the operator's ServiceAccount has exactly the permissions it needs (kubectl auth can-i),
#        cluster-wide, or only in watchNamespace when that is set;
#      - kubeconform -strict with JSON schemas exported from that API server (built-in kinds and
#        the CRD), the same check `helm template | kubeconform` does with downloaded schemas.
#
# Usage: scripts/chart-check.sh [--no-cluster]
#   --no-cluster  steps 1-3 only (needs helm and kubectl, no control plane)
# Settings: LFUSYS_CACHE (~/.cache/lfusys: tools and the private cluster's state);
#   LFUSYS_CHART_CHECK_PORT_BASE (29980): the private cluster's ports, base..base+5 (the shared
#   test cluster of scripts/k8s-cluster.sh uses 29970..29975).
# The tools come from scripts/k8s-tools.sh (built once from the Go module proxy; slow when cold).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHART="$ROOT/charts/lfusys-operator"
CRD="$CHART/crds/lfusys.io_lfusysclusters.yaml"
CACHE="${LFUSYS_CACHE:-$HOME/.cache/lfusys}"
export LFUSYS_CACHE="$CACHE"
CLUSTER=1
[[ ${1:-} == --no-cluster ]] && CLUSTER=0
[[ $# -eq 0 || ${1:-} == --no-cluster ]] || { echo "usage: $0 [--no-cluster]" >&2; exit 2; }

BIN="$(bash "$ROOT/scripts/k8s-tools.sh" --print-bin)"
if [[ ! -x $BIN/helm || ! -x $BIN/kubectl || ($CLUSTER == 1 && ! -x $BIN/kube-apiserver) ]]; then
  bash "$ROOT/scripts/k8s-tools.sh"
fi
export PATH="$BIN:$PATH"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lfusys-chart-check.XXXXXX")"
PASSED=0
FAILED=0
STARTED_CLUSTER=0
# The private cluster: its own state directory and ports.
export LFUSYS_K8S_DIR="$CACHE/k8s/chart-check"
# The chart checks need no running Pods: kwok Nodes.
export LFUSYS_K8S_NODES=kwok
export LFUSYS_K8S_PORT_BASE="${LFUSYS_CHART_CHECK_PORT_BASE:-29980}"
export LFUSYS_K8S_SCHEMAS="$LFUSYS_K8S_DIR/schemas"

cleanup() {
  if [[ $STARTED_CLUSTER == 1 ]]; then
    bash "$ROOT/scripts/k8s-cluster.sh" stop || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$1"; }
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL  %s\n' "$1"
  [[ -z ${2:-} || ! -s $2 ]] || sed 's/^/      /' "$2" | tail -20
}
# check NAME COMMAND...: the command must succeed.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then pass "$name"; else fail "$name" "$WORK/out"; fi
}
# refuse NAME PATTERN COMMAND...: the command must fail, its output matching PATTERN (grep -E).
refuse() {
  local name=$1 pattern=$2
  shift 2
  if "$@" >"$WORK/out" 2>&1; then
    fail "$name (was accepted)" "$WORK/out"
  elif grep -qE -- "$pattern" "$WORK/out"; then
    pass "$name"
  else
    echo "(expected the output to match: $pattern)" >>"$WORK/out"
    fail "$name (failed for another reason)" "$WORK/out"
  fi
}

# The variants every check renders. A minimal storage spec, as DESIGN §5 requires.
MINIMAL_SPEC='{"storage":{"s3":{"bucket":"lfusys-uploads"},"dynamodb":{"tablePrefix":"lfusys-"},"sqs":{"queueName":"lfusys-assembly.fifo"}}}'
# Every field of the spec set, to check the whole schema.
FULL_SPEC='{
  "image": {"repository": "registry.example.com/lfusys", "tag": "0.1.0", "pullPolicy": "Always"},
  "gateway": {"replicas": 3, "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
  "sessions": {"replicas": 1, "resources": {"limits": {"memory": "512Mi"}}},
  "uploads": {"resources": {"requests": {"cpu": "500m"}},
              "autoscaling": {"minReplicas": 2, "maxReplicas": 50, "targetQueueDepthPerReplica": 4,
                              "pollIntervalSeconds": 10, "scaleDownStabilizationSeconds": 120}},
  "storage": {"s3": {"bucket": "lfusys-uploads", "region": "eu-west-1", "endpoint": "http://s3.storage:9000"},
              "dynamodb": {"tablePrefix": "lfusys-", "region": "eu-west-1", "endpoint": "https://dynamodb.eu-west-1.amazonaws.com"},
              "sqs": {"queueName": "lfusys-assembly.fifo", "region": "eu-west-1"},
              "credentialsSecretRef": {"name": "aws-credentials"}},
  "auth": {"signingKeySecretRef": {"name": "lfusys-signing-key"}},
  "ingress": {"enabled": true, "host": "files.example.com", "className": "nginx", "tlsSecretName": "files-tls"}
}'
NS=lfusys-system
SCOPED_NS=lfusys-apps
declare -A VARIANTS=(
  [default]=""
  [cluster]="--set cluster.enabled=true --set cluster.name=files --set-json cluster.spec=$(tr -d ' \n' <<<"$FULL_SPEC")"
  [scoped]="--set watchNamespace=$SCOPED_NS --set replicaCount=2 --set metrics.prometheusScrapeAnnotations=true --set rbac.aggregateToDefaultRoles=false"
)

render() { # render VARIANT [extra helm args...] > manifests
  local variant=$1
  shift
  # shellcheck disable=SC2086 # the variant's arguments are words
  helm template lfusys "$CHART" --namespace "$NS" ${VARIANTS[$variant]} "$@"
}

echo "== helm lint --strict"
for v in default cluster scoped; do
  # shellcheck disable=SC2086
  check "helm lint --strict ($v)" helm lint --strict "$CHART" --namespace "$NS" ${VARIANTS[$v]}
done

echo "== helm template"
for v in default cluster scoped; do
  if render "$v" >"$WORK/$v.yaml" 2>"$WORK/out"; then pass "helm template ($v)"; else fail "helm template ($v)" "$WORK/out"; fi
done

echo "== values.schema.json refuses bad values"
refuse "replicaCount=-1" "replicaCount.*minimum" helm template x "$CHART" --set replicaCount=-1
refuse "replicaCount=two (a string)" "replicaCount.*want integer" helm template x "$CHART" --set replicaCount=two
refuse "an unknown top-level key" "additional properties 'replicas' not allowed" helm template x "$CHART" --set replicas=2
refuse "an unknown nested key" "additional properties 'digest' not allowed" helm template x "$CHART" --set image.digest=sha256:0
refuse "image.pullPolicy=Sometimes" "pullPolicy.*must be one of" helm template x "$CHART" --set image.pullPolicy=Sometimes
refuse "cluster.enabled without a spec" "/cluster/spec.*missing property 'storage'" helm template x "$CHART" --set cluster.enabled=true
refuse "cluster.spec.storage without sqs" "missing propert.*sqs" helm template x "$CHART" --set cluster.enabled=true \
  --set-json 'cluster.spec={"storage":{"s3":{"bucket":"abc"},"dynamodb":{"tablePrefix":"p"}}}'
refuse "cluster.name not a DNS label" "/cluster/name" helm template x "$CHART" --set cluster.name=Files_1
refuse "watchNamespace not a DNS label" "/watchNamespace" helm template x "$CHART" --set watchNamespace=Apps
refuse "resources with a bad quantity" "/resources/limits/memory" helm template x "$CHART" --set resources.limits.memory=lots
refuse "rbac.create=maybe (not a boolean)" "/rbac/create.*want boolean" helm template x "$CHART" --set rbac.create=maybe

echo "== rendered manifests"
# Each variant as a stream of JSON objects: `kubectl label --local` converts the YAML without a
# server (removing a label that is not there changes nothing), any kind included.
for v in default cluster scoped; do
  [[ -s $WORK/$v.yaml ]] || continue
  KUBECONFIG=/dev/null kubectl label --local -f "$WORK/$v.yaml" -o json lfusys.io/chart-check- \
    >"$WORK/$v.json" 2>"$WORK/out" || fail "kubectl reads the rendered $v manifests" "$WORK/out"
done
# scripts/chart-check/manifest-assertions.py: one line per broken promise, exit 1 if any.
check "manifests hold the chart's promises" python3 "$ROOT/scripts/chart-check/manifest-assertions.py" "$WORK"

if [[ $CLUSTER == 1 ]]; then
  echo "== a private control plane (scripts/k8s-cluster.sh, state in $LFUSYS_K8S_DIR, ports from $LFUSYS_K8S_PORT_BASE)"
  if bash "$ROOT/scripts/k8s-cluster.sh" status >/dev/null 2>&1; then
    echo "(already running: reusing it and leaving it running)"
  else
    # A stale half-started one (a killed earlier run): stop it, so start gets a fresh etcd.
    bash "$ROOT/scripts/k8s-cluster.sh" stop >/dev/null 2>&1 || true
    STARTED_CLUSTER=1
    bash "$ROOT/scripts/k8s-cluster.sh" start
  fi
  eval "$(bash "$ROOT/scripts/k8s-cluster.sh" env)"
  # A leftover of an earlier run against a reused cluster.
  helm uninstall lfusys -n "$NS" --wait >/dev/null 2>&1 || true
  helm uninstall scoped -n "$NS-scoped" --wait >/dev/null 2>&1 || true
  # The namespaces enforce the "restricted" Pod Security Standard: the operator's Pod must pass.
  for ns in "$NS" "$NS-scoped" "$SCOPED_NS"; do
    kubectl create namespace "$ns" --dry-run=client -o yaml |
      kubectl label --local -f - -o yaml pod-security.kubernetes.io/enforce=restricted \
        pod-security.kubernetes.io/warn=restricted >"$WORK/ns.yaml"
    kubectl apply -f "$WORK/ns.yaml" >/dev/null
  done

  echo "== helm install (CRD, operator, LfusysCluster) and the API server's view"
  check "helm install --wait (restricted namespace; kwok runs the Pod)" \
    helm install lfusys "$CHART" --namespace "$NS" --wait --timeout 180s \
    --set cluster.enabled=true --set cluster.name=files --set-json "cluster.spec=$MINIMAL_SPEC"
  check "the CRD is established" kubectl wait --for condition=Established --timeout 60s crd/lfusysclusters.lfusys.io
  check "the Deployment is available" kubectl -n "$NS" rollout status deployment/lfusys-lfusys-operator --timeout 60s
  # The API server applied the CRD's defaults to the stored object.
  check "the LfusysCluster got the CRD's defaults" bash -c "
    got=\$(kubectl -n $NS get lfc files -o jsonpath='{.spec.gateway.replicas} {.spec.sessions.replicas} {.spec.uploads.autoscaling.maxReplicas} {.spec.image.repository}:{.spec.image.tag} {.spec.ingress.enabled}')
    [[ \$got == '2 1 20 ghcr.io/lfusys/lfusys:0.1.0 true' ]] || { echo \"got: \$got\"; exit 1; }"
  check "kubectl get lfc shows the printer columns" bash -c "
    kubectl -n $NS get lfc | head -1 | grep -E '^NAME +READY +WORKERS +QUEUE +AGE'"
  check "helm shows NOTES with kubectl get lfc" bash -c "helm get notes lfusys -n $NS | grep -q 'get lfc files'"

  echo "== kubectl apply --dry-run=server --validate=strict"
  check "the CRD itself" kubectl apply --server-side --dry-run=server --validate=strict -f "$CRD"
  for v in default cluster scoped; do
    check "rendered $v" kubectl apply --dry-run=server --validate=strict -f "$WORK/$v.yaml"
  done

  echo "== the CRD refuses impossible specs (OpenAPI schema and CEL rules, at apply time)"
  bad_spec() { # bad_spec NAME PATTERN JSON-PATCH-OF-SPEC (merged into the minimal spec)
    local name=$1 pattern=$2 spec
    spec=$(python3 "$ROOT/scripts/json-merge.py" "$MINIMAL_SPEC" "$3")
    render default --set cluster.enabled=true --set cluster.name=bad --set-json "cluster.spec=$spec" \
      --show-only templates/lfusyscluster.yaml >"$WORK/bad.yaml"
    refuse "$name" "$pattern" kubectl apply --dry-run=server --validate=strict -f "$WORK/bad.yaml"
  }
  bad_spec "minReplicas > maxReplicas (CEL)" "minReplicas must not be greater than maxReplicas" \
    '{"uploads":{"autoscaling":{"minReplicas":5,"maxReplicas":2}}}'
  bad_spec "targetQueueDepthPerReplica 0" "targetQueueDepthPerReplica.*greater than or equal to 1" \
    '{"uploads":{"autoscaling":{"targetQueueDepthPerReplica":0}}}'
  bad_spec "tlsSecretName without a host (CEL)" "tlsSecretName needs a host" \
    '{"ingress":{"tlsSecretName":"tls"}}'
  bad_spec "an endpoint that is not a URL (CEL)" "endpoint must be an http:// or https:// URL" \
    '{"storage":{"s3":{"endpoint":"s3.local:9000"}}}'
  bad_spec "an invalid bucket name" "spec.storage.s3.bucket.*should match" '{"storage":{"s3":{"bucket":"Bad_Bucket"}}}'
  bad_spec "negative gateway replicas" "spec.gateway.replicas.*greater than or equal to 0" '{"gateway":{"replicas":-1}}'
  bad_spec "an unknown field (strict validation)" "unknown field \"spec.storage.s3.bukket\"" \
    '{"storage":{"s3":{"bukket":"x"}}}'
  bad_spec "an unknown pullPolicy" "spec.image.pullPolicy.*Unsupported value" '{"image":{"pullPolicy":"Sometimes"}}'

  echo "== the operator's permissions (kubectl auth can-i as its ServiceAccount)"
  # can_i EXPECT NAME ARGS...: `kubectl auth can-i ARGS` as the ServiceAccount must answer EXPECT.
  can_i() {
    local want=$1 name=$2 sa=$3 got
    shift 3
    got=$(kubectl auth can-i --as "system:serviceaccount:$sa" "$@" 2>/dev/null || true)
    if [[ $got == "$want" ]]; then pass "$name: $want"; else
      echo "kubectl auth can-i $* as $sa: $got (wanted $want)" >"$WORK/out"
      fail "$name" "$WORK/out"
    fi
  }
  SA="$NS:lfusys-lfusys-operator"
  can_i yes "watch lfusysclusters in any namespace" "$SA" watch lfusysclusters.lfusys.io -A
  can_i no "update lfusysclusters (spec)" "$SA" update lfusysclusters.lfusys.io -n default
  can_i yes "patch lfusysclusters/status" "$SA" patch lfusysclusters.lfusys.io --subresource status -n default
  can_i yes "update lfusysclusters/finalizers (blockOwnerDeletion)" "$SA" update lfusysclusters.lfusys.io --subresource finalizers -n default
  can_i no "delete lfusysclusters" "$SA" delete lfusysclusters.lfusys.io -n default
  for r in deployments.apps services configmaps serviceaccounts secrets poddisruptionbudgets.policy ingresses.networking.k8s.io; do
    can_i yes "patch $r" "$SA" patch "$r" -n default
    can_i yes "delete $r" "$SA" delete "$r" -n default
  done
  can_i no "deletecollection secrets" "$SA" deletecollection secrets -n default
  can_i yes "create events" "$SA" create events -n default
  can_i yes "create events.events.k8s.io" "$SA" create events.events.k8s.io -n default
  can_i no "list pods" "$SA" list pods -n default
  can_i no "create pods" "$SA" create pods -n default
  can_i no "touch nodes" "$SA" get nodes
  can_i no "edit its own RBAC" "$SA" patch clusterroles.rbac.authorization.k8s.io
  can_i no "edit CRDs" "$SA" update customresourcedefinitions.apiextensions.k8s.io
  can_i yes "create leases in its namespace" "$SA" create leases.coordination.k8s.io -n "$NS"
  can_i yes "update its own lease" "$SA" update leases.coordination.k8s.io/lfusys-lfusys-operator -n "$NS"
  can_i no "update another lease" "$SA" update leases.coordination.k8s.io/kube-controller-manager -n "$NS"
  can_i no "create leases elsewhere" "$SA" create leases.coordination.k8s.io -n default
  # The aggregation controller (kube-controller-manager) folds the chart's ClusterRoles into the
  # built-in ones: namespace admins and editors may manage LfusysClusters, viewers read them.
  aggregated() { # aggregated ROLE VERB
    local i
    for ((i = 0; i < 60; i++)); do
      kubectl get clusterrole "$1" -o json | python3 "$ROOT/scripts/chart-check/clusterrole-grants.py" "$2" && return 0
      sleep 0.5
    done
    echo "clusterrole $1 has no $2 on lfusysclusters"
    return 1
  }
  check "the edit role may create LfusysClusters (aggregated)" aggregated edit create
  check "the view role may list LfusysClusters (aggregated)" aggregated view list

  echo "== watchNamespace: a Role in that namespace only"
  check "helm install --wait (watchNamespace=$SCOPED_NS)" \
    helm install scoped "$CHART" --namespace "$NS-scoped" --wait --timeout 180s \
    --set watchNamespace="$SCOPED_NS" --set rbac.aggregateToDefaultRoles=false
  SA="$NS-scoped:scoped-lfusys-operator"
  can_i yes "watch lfusysclusters in $SCOPED_NS" "$SA" watch lfusysclusters.lfusys.io -n "$SCOPED_NS"
  can_i no "watch lfusysclusters in every namespace" "$SA" watch lfusysclusters.lfusys.io -A
  can_i yes "patch deployments in $SCOPED_NS" "$SA" patch deployments.apps -n "$SCOPED_NS"
  can_i no "patch deployments in default" "$SA" patch deployments.apps -n default
  can_i yes "create leases in its own namespace" "$SA" create leases.coordination.k8s.io -n "$NS-scoped"
  check "helm uninstall (watchNamespace)" helm uninstall scoped -n "$NS-scoped" --wait

  echo "== kubeconform -strict with schemas from the API server"
  if location=$(bash "$ROOT/scripts/k8s-cluster.sh" schemas 2>"$WORK/out"); then
    # The gitVersion without its leading "v"s (kubeconform wants 1.37.2).
    version=$(kubectl version -o json | python3 "$ROOT/scripts/json-field.py" serverVersion.gitVersion | sed 's/^v*//')
    for v in default cluster scoped; do
      check "kubeconform -strict ($v)" kubeconform -strict -summary -kubernetes-version "$version" \
        -schema-location "$location" "$WORK/$v.yaml"
    done
    check "kubeconform -strict (the CRD)" kubeconform -strict -summary -kubernetes-version "$version" \
      -schema-location "$location" "$CRD"
  else
    fail "k8s-cluster.sh schemas" "$WORK/out"
  fi

  check "helm uninstall" helm uninstall lfusys -n "$NS" --wait
fi

echo "chart-check: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
