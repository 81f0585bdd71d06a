#!/usr/bin/env bash
# Executes flows.ipynb on flow records and events, failing on any error.
#
#   SENSOR_FLOWS=flows.jsonl SENSOR_EVENTS=events.jsonl examples/notebook/run.sh [OUT.ipynb]
#
# The first run creates a virtual environment with pandas, matplotlib and
# Jupyter under ~/.cache/sensor-notebook-venv (override with
# SENSOR_NOTEBOOK_VENV). The executed notebook is written to OUT.ipynb,
# $SENSOR_NOTEBOOK_OUT, or flows.executed.ipynb in the current directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SENSOR_NOTEBOOK_VENV:-$HOME/.cache/sensor-notebook-venv}"
out="${1:-${SENSOR_NOTEBOOK_OUT:-$PWD/flows.executed.ipynb}}"

: "${SENSOR_FLOWS:?set SENSOR_FLOWS to a flow records file (sensor run/analyze --flows-file)}"
[ -r "$SENSOR_FLOWS" ] || { echo "run.sh: cannot read $SENSOR_FLOWS" >&2; exit 2; }
export SENSOR_FLOWS SENSOR_EVENTS="${SENSOR_EVENTS:-}"

if [ ! -x "$venv/bin/jupyter" ]; then
    echo "run.sh: creating $venv (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet pandas matplotlib nbconvert ipykernel jupyter
fi

mkdir -p "$(dirname "$out")"
"$venv/bin/jupyter" nbconvert --to notebook --execute \
    --ExecutePreprocessor.timeout=600 \
    --ExecutePreprocessor.kernel_name=python3 \
    --output "$(basename "$out")" --output-dir "$(dirname "$out")" \
    "$here/flows.ipynb"
echo "run.sh: executed notebook written to $out" >&2
