#!/usr/bin/env python3
"""Checks that a ClusterRole grants a verb on lfusysclusters.

Usage: kubectl get clusterrole ROLE -o json | scripts/chart-check/clusterrole-grants.py VERB
Exits 0 if one of the role's rules lists the resource "lfusysclusters" and VERB, 1 otherwise
(also when the role has no rules); prints nothing. scripts/chart-check.sh polls it to see the
chart's aggregated ClusterRoles folded into the built-in edit and view roles. Standard library
only.
"""
import json
import sys

rules = json.load(sys.stdin).get("rules") or []
sys.exit(0 if any("lfusysclusters" in r.get("resources", []) and sys.argv[1] in r.get("verbs", [])
                  for r in rules) else 1)
