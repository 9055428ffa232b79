#!/usr/bin/env python3
"""Writes kubeconform's JSON schemas from a Kubernetes API server's OpenAPI v2 document.

Used by `scripts/k8s-cluster.sh schemas`, which fetches /openapi/v2 from the running API server
(built-in kinds and every CRD installed at that moment), so that kubeconform runs offline.

One standalone schema per kind (the definitions it references inlined), as kubeconform's
default schema repository lays them out: {version}-standalone[-strict]/{kind}-{group}-{ver}.json.
As that repository's generator does: int-or-string is a string or an integer, optional fields
may be null, and the -strict variant forbids properties the API does not define. Shared types
(DeleteOptions, WatchEvent) and lists are skipped.

Usage: scripts/k8s-cluster/kubeconform-schemas.py OPENAPI-V2-JSON OUT-DIR VERSION
  OPENAPI-V2-JSON  the API server's /openapi/v2 document, saved to a file
  OUT-DIR          writes OUT-DIR/VERSION-standalone/ and OUT-DIR/VERSION-standalone-strict/
                   (created as needed; files already there are overwritten, others left)
  VERSION          the server's gitVersion, e.g. v1.37.2
Exits 0 when written; a traceback and a non-zero exit on an unreadable document. Standard
library only.
"""
import json, os, re, sys

spec_path, out, version = sys.argv[1:]
defs = json.load(open(spec_path))["definitions"]
defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {
    "oneOf": [{"type": "string"}, {"type": "number"}]}
REF = re.compile(r"^#/definitions/(.+)$")

def convert(node, strict):
    if isinstance(node, list):
        return [convert(x, strict) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    new = {k: convert(v, strict) for k, v in node.items()}
    props = new.get("properties")
    if isinstance(props, dict):
        required = set(new.get("required", []))
        for name, prop in props.items():
            if name not in required and isinstance(prop.get("type"), str):
                prop["type"] = [prop["type"], "null"]
        if strict and "additionalProperties" not in new \
                and not new.get("x-kubernetes-preserve-unknown-fields"):
            new["additionalProperties"] = False
    return new

def refs(node, seen):
    if isinstance(node, list):
        for x in node:
            refs(x, seen)
    elif isinstance(node, dict):
        ref = node.get("$ref")
        m = REF.match(ref) if isinstance(ref, str) else None  # JSONSchemaProps has a "$ref" property
        if m and m.group(1) not in seen and m.group(1) in defs:
            seen.add(m.group(1))
            refs(defs[m.group(1)], seen)
        for v in node.values():
            refs(v, seen)

for strict in (False, True):
    d = os.path.join(out, f"{version}-standalone" + ("-strict" if strict else ""))
    os.makedirs(d, exist_ok=True)
    for name, schema in defs.items():
        gvks = schema.get("x-kubernetes-group-version-kind", [])
        if len(gvks) != 1 or name.endswith("List"):
            continue  # shared types (DeleteOptions, WatchEvent) and lists are not manifests
        gvk = gvks[0]
        group = gvk["group"].split(".")[0]
        suffix = f"-{group}-{gvk['version']}" if group else f"-{gvk['version']}"
        seen = set()
        refs(schema, seen)
        doc = convert(schema, strict)
        # The kind's own apiVersion and kind, as kubectl sends them.
        api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        doc.setdefault("properties", {})["apiVersion"] = {"type": "string", "enum": [api_version]}
        doc["properties"]["kind"] = {"type": "string", "enum": [gvk["kind"]]}
        if seen:
            doc["definitions"] = {n: convert(defs[n], strict) for n in sorted(seen)}
        with open(os.path.join(d, f"{gvk['kind'].lower()}{suffix}.json"), "w") as f:
            json.dump(doc, f)
