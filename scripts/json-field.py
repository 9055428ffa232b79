#!/usr/bin/env python3
"""Prints one field of the JSON document on stdin.

Usage: scripts/json-field.py KEY[.KEY...]   e.g. `kubectl version -o json | scripts/json-field.py
serverVersion.gitVersion` prints v1.37.2. Each KEY is an object key (no list indices); the value
is printed with Python's print(), so a string comes out as is. A missing key or invalid JSON: a
traceback and exit 1; not exactly one argument: a usage line and exit 1. Used by
scripts/k8s-cluster.sh and scripts/chart-check.sh. Standard library only.
"""
import json
import sys

if len(sys.argv) != 2:
    sys.exit("usage: scripts/json-field.py KEY[.KEY...]  (the JSON document on stdin)")
value = json.load(sys.stdin)
for key in sys.argv[1].split("."):
    value = value[key]
print(value)
