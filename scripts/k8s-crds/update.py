#!/usr/bin/env python3
"""Refresh the CRD schemas scripts/validate-k8s.sh validates against.

    scripts/k8s-crds/update.py monitoring.coreos.com_podmonitors.yaml \
        monitoring.coreos.com_prometheusrules.yaml

takes the Prometheus Operator's CRD files (example/prometheus-operator-crd/
in its repository, or `kubectl get crd NAME -o yaml` from a cluster that has
them) and writes, for each, the openAPIV3Schema of version v1 without its
descriptions to KIND.v1.schema.json beside this script.
"""

import json
import os
import sys

import yaml


def clean(schema):
    """The schema without `description` keywords (property names kept)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key == "properties":
            out[key] = {name: clean(s) for name, s in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = clean(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [clean(s) for s in value]
        else:
            out[key] = value
    return out


def main(paths):
    here = os.path.dirname(os.path.abspath(__file__))
    for path in paths:
        with open(path) as f:
            crd = next(d for d in yaml.safe_load_all(f) if d)
        kind = crd["spec"]["names"]["kind"]
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = clean(version["schema"]["openAPIV3Schema"])
        schema["x-source"] = {
            "crd": crd["metadata"]["name"],
            "operator-version": crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version", "?"),
        }
        out = os.path.join(here, f"{kind.lower()}.v1.schema.json")
        with open(out, "w") as f:
            json.dump(schema, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"{out}: {kind} v1 from {path}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
