#!/usr/bin/env python3
"""Prints the JSON object BASE with PATCH merged into it, recursively.

Usage: scripts/json-merge.py BASE-JSON PATCH-JSON   (both JSON objects, given as arguments)
A key of PATCH whose value is an object, where BASE's value is an object too, is merged into it;
any other key of PATCH replaces BASE's value (or is added). Prints the result as one line of
JSON (json.dumps). Invalid JSON: a traceback and exit 1. Used by scripts/chart-check.sh (specs
the CRD must refuse, each the minimal spec with a patch). Standard library only.
"""
import json
import sys


def merge(a, b):
    for k, v in b.items():
        a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a


print(json.dumps(merge(json.loads(sys.argv[1]), json.loads(sys.argv[2]))))
