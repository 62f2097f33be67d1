#!/usr/bin/env bash
# The Run step of the Greengrass v2 component (install/greengrass-v2/recipe.yaml): build the connector definition
# from the component configuration, fetch the model if asked, and run the local Greengrass v1 runtime in the
# foreground (the nucleus stops it with SIGTERM, which `ggic run` handles).
#
# Usage: run.sh WORK_DIR PARAMETERS_JSON GPU_ACCELERATION FETCH_MODEL PORT [ggic run arguments...]
# Environment: GGIC_CONNECTOR_NAME (the manifest's Setenv), AWS_REGION (set by the nucleus).
set -euo pipefail

if (($# < 5)); then
    echo "usage: run.sh WORK_DIR PARAMETERS_JSON GPU_ACCELERATION FETCH_MODEL PORT [ggic run arguments...]" >&2
    exit 2
fi
WORK=$1 PARAMETERS=$2 GPU=$3 FETCH=$4 PORT=$5
shift 5
: "${GGIC_CONNECTOR_NAME:?is set by the recipe manifest}" "${AWS_REGION:?is set by the Greengrass nucleus}"
VENV=$WORK/venv
export GGIC_STATE_DIR=$WORK/state
mkdir -p "$GGIC_STATE_DIR"
DEFINITION=$GGIC_STATE_DIR/connectors.json

"$VENV/bin/python" - "$PARAMETERS" "$GPU" >"$DEFINITION" <<'PY'
import json, os, sys
parameters = json.loads(sys.argv[1])
name = os.environ["GGIC_CONNECTOR_NAME"]
if name.endswith("JTX2"):
    parameters.setdefault("GPUAcceleration", sys.argv[2])
arn = f"arn:aws:greengrass:{os.environ['AWS_REGION']}::/connectors/{name}/versions/2"
print(json.dumps({"Connectors": [{"Id": "ImageClassification", "ConnectorArn": arn, "Parameters": parameters}]}))
PY

parameter() {
    "$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["Connectors"][0]["Parameters"][sys.argv[2]])' "$DEFINITION" "$1"
}
if [[ $FETCH == true ]]; then
    "$VENV/bin/ggic" fetch-model --training-job-arn "$(parameter MLModelSageMakerJobArn)" \
        --destination "$(parameter MLModelDestinationPath)"
fi
ID=$("$VENV/bin/ggic" create-connector-definition --name greengrass-v2 --initial-version "file://$DEFINITION" |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Id"])')
exec "$VENV/bin/ggic" run --connector-definition "$ID" --port "$PORT" "$@"
