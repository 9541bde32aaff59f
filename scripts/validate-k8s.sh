#!/usr/bin/env bash
# Validate every kustomize overlay under config/k8s/overlays/:
#   1. kubectl kustomize builds it (kubectl's built-in kustomize);
#   2. Kubernetes' own kinds pass kubernetes-validate --strict (PyPI), for
#      the oldest Kubernetes the manifests claim (1.30: preStop sleep) and
#      the newest it knows;
#   3. the Prometheus Operator kinds (PodMonitor, PrometheusRule) pass their
#      CRD schemas (scripts/k8s-crds/, strict), and the PrometheusRule's
#      groups equal config/alerts.yml's and pass `promtool check rules`;
#   4. scripts/k8s-check.py: Pod Security "restricted" fields on every
#      container of every Pod template, pinned images, requests and limits,
#      and weir's own needs (probes, WEIR_WORKERS, drain timing against the
#      overlay's weir.toml, read-only config and token, PodDisruptionBudget,
#      NetworkPolicy, PodMonitor, Services' ports).
# Exits non-zero on any failure, naming the overlay, object and field.
# Needs kubectl (Debian package kubectl), kubernetes-validate (pip),
# promtool (Debian package prometheus) and python3 with PyYAML and
# jsonschema (kubernetes-validate's dependencies).
#
#   scripts/validate-k8s.sh              # every overlay
#   scripts/validate-k8s.sh edge fleet   # some
set -euo pipefail
cd "$(dirname "$0")/.."

OLDEST_K8S=1.30.0

for tool in kubectl kubernetes-validate promtool python3; do
  command -v "$tool" >/dev/null || { echo "validate-k8s: $tool is not installed" >&2; exit 2; }
done

if [ $# -gt 0 ]; then
  overlays=("$@")
else
  overlays=()
  for d in config/k8s/overlays/*/; do overlays+=("$(basename "$d")"); done
fi
[ ${#overlays[@]} -gt 0 ] || { echo "validate-k8s: no overlays under config/k8s/overlays" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()

validate() {
  local name=$1 dir=config/k8s/overlays/$1
  local out=$tmp/$name
  mkdir -p "$out"
  echo "== $name ($dir)"
  if ! kubectl kustomize "$dir" >"$out/rendered.yaml" 2>"$out/kustomize.err"; then
    cat "$out/kustomize.err" >&2
    echo "FAIL $name: kubectl kustomize $dir" >&2
    return 1
  fi
  local ok=0
  # Splits out the Prometheus Operator kinds, validates them and everything
  # kubernetes-validate cannot see; writes core.yaml and rules.yml.
  python3 scripts/k8s-check.py check "$dir" "$out/rendered.yaml" "$out/core.yaml" "$out/rules.yml" || ok=1
  for version in "$OLDEST_K8S" ""; do
    local args=(--strict)
    [ -n "$version" ] && args+=(-k "$version")
    if ! kubernetes-validate "${args[@]}" "$out/core.yaml" >"$out/kv.out" 2>&1; then
      ok=1
    fi
    # Any object it had no schema for (a warning, exit status 0) is a
    # failure too: the CRD kinds were split out, nothing else may be unknown.
    if grep -v " passed for resource " "$out/kv.out" | grep -q .; then
      ok=1
    fi
    sed "s|$out/core.yaml|$name|; s|^|kubernetes-validate ${version:-(newest)}: |" "$out/kv.out"
  done
  if [ -s "$out/rules.yml" ]; then
    if promtool check rules "$out/rules.yml" >"$out/promtool.out" 2>&1; then
      echo "promtool check rules: $name PrometheusRule: $(grep -o '[0-9]* rules found' "$out/promtool.out")"
    else
      cat "$out/promtool.out" >&2
      echo "FAIL $name: promtool check rules (the PrometheusRule's groups)" >&2
      ok=1
    fi
  fi
  return $ok
}

for name in "${overlays[@]}"; do
  if validate "$name"; then
    echo "ok $name"
  else
    failed+=("$name")
    echo "FAILED $name" >&2
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "validate-k8s: failed: ${failed[*]}" >&2
  exit 1
fi
echo "validate-k8s: all ${#overlays[@]} overlays valid: ${overlays[*]}"
