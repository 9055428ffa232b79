#!/usr/bin/env python3
"""Checks that the rendered manifests of charts/lfusys-operator hold what the chart promises.

Step 3 of scripts/chart-check.sh. WORK-DIR holds, for each variant rendered there (default,
cluster, scoped), VARIANT.json: the variant's `helm template` output as a stream of JSON objects
(`kubectl label --local -o json`, Lists unpacked). For each variant it checks: one Deployment,
its default image and pull policy; the Pod and container security context (non-root as
65532:65532, RuntimeDefault seccomp, read-only root filesystem, no privilege escalation, all
capabilities dropped); grace period, ports, probes, resources, no args; the operator's
environment (listen address, lease name and namespace, POD_NAME, RUST_LOG, the watch namespace);
least-privilege RBAC (no wildcards, no Pods; the operator's role a Role in watchNamespace for
`scoped`, a ClusterRole otherwise, and no ClusterRoleBinding when scoped); the metrics Service
and its scrape annotations (scoped only); one LfusysCluster in `cluster` only; a namespace on
every namespaced object.

Usage: scripts/chart-check/manifest-assertions.py WORK-DIR
Prints one line per broken promise and exits 1 if there is any, 0 otherwise. Standard library
only.
"""
import json, os, sys
work = sys.argv[1]
problems = []

def items(variant):
    text, objs, pos = open(os.path.join(work, variant + ".json")).read(), [], 0
    decoder = json.JSONDecoder()
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return objs
        obj, pos = decoder.raw_decode(text, pos)
        objs.extend(obj["items"] if obj.get("kind") == "List" else [obj])

def expect(cond, what):
    if not cond:
        problems.append(what)

def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]

for variant in ("default", "cluster", "scoped"):
    objs = items(variant)
    kinds = sorted(o["kind"] for o in objs)
    dep = by_kind(objs, "Deployment")
    expect(len(dep) == 1, f"{variant}: one Deployment, got {kinds}")
    if not dep:
        continue
    dep = dep[0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    expect(c["image"] == ("ghcr.io/lfusys/lfusys-operator:0.1.0"), f"{variant}: image {c['image']}")
    expect(c["imagePullPolicy"] == "IfNotPresent", f"{variant}: pullPolicy")
    expect(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532
           and psc.get("runAsGroup") == 65532, f"{variant}: pod runs as 65532, non-root")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{variant}: pod seccomp")
    expect(sc.get("readOnlyRootFilesystem") is True, f"{variant}: read-only root filesystem")
    expect(sc.get("allowPrivilegeEscalation") is False, f"{variant}: no privilege escalation")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{variant}: drop ALL capabilities")
    expect(sc.get("runAsNonRoot") is True, f"{variant}: container non-root")
    expect(pod.get("terminationGracePeriodSeconds") == 30, f"{variant}: grace period 30 s")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    expect(ports == {"http-ops": 8080}, f"{variant}: ports {ports}")
    expect(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-ops"}, f"{variant}: liveness")
    expect(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-ops"}, f"{variant}: readiness")
    expect(c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}, f"{variant}: resources")
    expect(not c.get("args") and not c.get("command"), f"{variant}: no args")
    env = {e["name"]: e for e in c["env"]}
    expect(env["LFUSYS_OPERATOR_LISTEN"].get("value") == "0.0.0.0:8080", f"{variant}: listen")
    expect(env["LFUSYS_OPERATOR_LEASE_NAME"].get("value") == "lfusys-lfusys-operator", f"{variant}: lease name")
    expect(env["LFUSYS_OPERATOR_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace",
           f"{variant}: lease namespace from the downward API")
    expect(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", f"{variant}: POD_NAME")
    expect(env["RUST_LOG"].get("value") == "info", f"{variant}: RUST_LOG")
    watch = env["LFUSYS_OPERATOR_WATCH_NAMESPACE"].get("value")
    expect(watch == ("lfusys-apps" if variant == "scoped" else ""), f"{variant}: watch namespace {watch!r}")
    expect(dep["metadata"]["labels"].get("app.kubernetes.io/name") == "lfusys-operator", f"{variant}: name label")
    # RBAC: least privilege.
    roles = by_kind(objs, "ClusterRole") + by_kind(objs, "Role")
    for r in roles:
        for rule in r.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                expect("*" not in rule.get(key, []), f"{variant}: wildcard in {r['metadata']['name']}")
            expect("pods" not in rule.get("resources", []), f"{variant}: {r['metadata']['name']} grants pods")
    operator_roles = [r for r in roles if r["metadata"]["name"] == "lfusys-lfusys-operator"]
    expect(len(operator_roles) == 1, f"{variant}: one operator role")
    if operator_roles:
        expected_kind = "Role" if variant == "scoped" else "ClusterRole"
        expect(operator_roles[0]["kind"] == expected_kind, f"{variant}: operator role is a {expected_kind}")
        if variant == "scoped":
            expect(operator_roles[0]["metadata"].get("namespace") == "lfusys-apps", f"{variant}: Role namespace")
            expect(not [b for b in objs if b["kind"] == "ClusterRoleBinding"], f"{variant}: no ClusterRoleBinding")
    svc = [s for s in by_kind(objs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    expect(len(svc) == 1 and svc[0]["spec"]["ports"][0]["name"] == "http-metrics"
           and svc[0]["spec"]["ports"][0]["port"] == 8080, f"{variant}: metrics Service")
    annotations = svc[0]["metadata"].get("annotations", {}) if svc else {}
    expect(("prometheus.io/scrape" in annotations) == (variant == "scoped"), f"{variant}: scrape annotations")
    lfc = by_kind(objs, "LfusysCluster")
    expect(len(lfc) == (1 if variant == "cluster" else 0), f"{variant}: LfusysCluster count")
    for o in objs:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            expect(o["metadata"].get("namespace"), f"{variant}: {o['kind']} {o['metadata']['name']} has a namespace")

for p in problems:
    print(p)
sys.exit(1 if problems else 0)
