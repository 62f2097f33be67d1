#!/usr/bin/env bash
# Deploy the connector into a real Greengrass v1 group as a long-lived (pinned) Lambda, with the AWS CLI.
#
# What AWS's connector was, we rebuild from parts: a Lambda function (the `make lambda-zip` package, handler
# connector.image_classification.handler.function_handler) published under an alias; a function definition that pins it, gives it binary
# input encoding, the connector parameters as environment variables, and memory and timeout to match; and a
# resource definition holding the ML resource (the SageMaker training job's model at MLModelDestinationPath) and the
# device's /opt/ggic (the virtual environment install/<platform>.sh made, where MXNet lives).
# --dry-run prints every aws command and writes the JSON documents under --out, running nothing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0
ZIP="$REPO/build/ggic-image-classification-lambda.zip"
OUT="$REPO/build/greengrass-v1"
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
ROLE_ARN="" JOB_ARN="" MODEL_PATH="" RESOURCE_ID="my-ml-resource" SERVICE_NAME="imageClassification"
TIMEOUT_S=10 MEMORY_KB=500000 FEEDBACK_ID="" ALIAS=live RUNTIME=python3.8 GGIC_HOME=/opt/ggic
PYTHON_VERSION=3.8
# What the handler process itself uses besides the inference worker (which LocalInferenceServiceMemoryLimitKB caps):
# Greengrass's MemorySize limits the function's whole container, worker included.
HANDLER_OVERHEAD_KB=262144

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }
run() {
    local quoted
    quoted=$(printf '%q ' "$@")
    printf '+ %s\n' "${quoted% }"
    if ((DRY_RUN == 0)); then "$@"; fi
}

usage() {
    cat <<'EOF'
Usage: install/greengrass-v1-lambda.sh --role-arn ARN --job-arn ARN --model-path PATH [options]

Creates the connector's Lambda function, a Greengrass function definition and a resource definition, then prints
the create-group-version / create-deployment commands that put them into your group.

  --role-arn ARN        Lambda execution role (required by the Lambda API; unused on the core)
  --job-arn ARN         MLModelSageMakerJobArn: the SageMaker training job whose model the ML resource holds
  --model-path PATH     MLModelDestinationPath: where the model appears inside the function's container
  --resource-id ID      MLModelResourceId (default my-ml-resource)
  --service-name NAME   LocalInferenceServiceName (default imageClassification)
  --timeout SECONDS     LocalInferenceServiceTimeoutSeconds (default 10)
  --memory-kb KB        LocalInferenceServiceMemoryLimitKB (default 500000)
  --feedback-config ID  MLFeedbackConnectorConfigId (default: none)
  --region REGION       default $AWS_REGION / $AWS_DEFAULT_REGION
  --zip FILE            the deployment package (default build/ggic-image-classification-lambda.zip: make lambda-zip)
  --python-version X.Y  the core's Lambda Python (default 3.8; runtime python3.8): the device's venv must match
  --ggic-home DIR       the device directory holding the venv (default /opt/ggic, as install/*.sh --venv /opt/ggic/venv)
  --out DIR             where the JSON documents go (default build/greengrass-v1)
  --dry-run             print the aws commands, run none
EOF
}

while (($#)); do
    case $1 in
        --role-arn) ROLE_ARN=${2:?--role-arn needs a value}; shift ;;
        --job-arn) JOB_ARN=${2:?--job-arn needs a value}; shift ;;
        --model-path) MODEL_PATH=${2:?--model-path needs a value}; shift ;;
        --resource-id) RESOURCE_ID=${2:?--resource-id needs a value}; shift ;;
        --service-name) SERVICE_NAME=${2:?--service-name needs a value}; shift ;;
        --timeout) TIMEOUT_S=${2:?--timeout needs a value}; shift ;;
        --memory-kb) MEMORY_KB=${2:?--memory-kb needs a value}; shift ;;
        --feedback-config) FEEDBACK_ID=${2:?--feedback-config needs a value}; shift ;;
        --region) REGION=${2:?--region needs a value}; shift ;;
        --zip) ZIP=${2:?--zip needs a value}; shift ;;
        --python-version) PYTHON_VERSION=${2:?--python-version needs a value}; RUNTIME=python$PYTHON_VERSION; shift ;;
        --ggic-home) GGIC_HOME=${2:?--ggic-home needs a value}; shift ;;
        --out) OUT=${2:?--out needs a value}; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[[ -n $ROLE_ARN && -n $JOB_ARN && -n $MODEL_PATH ]] || die "--role-arn, --job-arn and --model-path are required (see --help)"
[[ -n $REGION ]] || die "no region: pass --region or set AWS_REGION"
[[ $ROLE_ARN =~ ^arn:aws[a-z-]*:iam::([0-9]{12}):role/ ]] || die "--role-arn $ROLE_ARN is not an IAM role ARN"
ACCOUNT=${BASH_REMATCH[1]}
[[ $TIMEOUT_S =~ ^[1-9][0-9]*$ && $MEMORY_KB =~ ^[1-9][0-9]*$ ]] || die "--timeout and --memory-kb must be positive integers"
[[ -f $ZIP ]] || die "$ZIP not found: build it with make lambda-zip (or pass --zip)"
((DRY_RUN == 1)) || command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"

FUNCTION_NAME="GG-ML-INF-image-classification-$SERVICE_NAME"
FUNCTION_ARN="arn:aws:lambda:$REGION:$ACCOUNT:function:$FUNCTION_NAME:$ALIAS"
mkdir -p "$OUT"

# The JSON documents, written by Python so that quoting is never a question. The environment variables are exactly
# the connector parameters a Greengrass core would give the connector, plus where MXNet lives.
MODEL_PATH=$MODEL_PATH RESOURCE_ID=$RESOURCE_ID JOB_ARN=$JOB_ARN SERVICE_NAME=$SERVICE_NAME TIMEOUT_S=$TIMEOUT_S \
MEMORY_KB=$MEMORY_KB FEEDBACK_ID=$FEEDBACK_ID GGIC_HOME=$GGIC_HOME PYTHON_VERSION=$PYTHON_VERSION \
FUNCTION_NAME=$FUNCTION_NAME FUNCTION_ARN=$FUNCTION_ARN HANDLER_OVERHEAD_KB=$HANDLER_OVERHEAD_KB \
python3 - "$OUT" <<'EOF'
import json, os, sys
out, env = sys.argv[1], os.environ
parameters = {
    "MLModelDestinationPath": env["MODEL_PATH"],
    "MLModelResourceId": env["RESOURCE_ID"],
    "MLModelSageMakerJobArn": env["JOB_ARN"],
    "LocalInferenceServiceName": env["SERVICE_NAME"],
    "LocalInferenceServiceTimeoutSeconds": env["TIMEOUT_S"],
    "LocalInferenceServiceMemoryLimitKB": env["MEMORY_KB"],
}
if env["FEEDBACK_ID"]:
    parameters["MLFeedbackConnectorConfigId"] = env["FEEDBACK_ID"]
home = env["GGIC_HOME"]
variables = dict(parameters, PYTHONPATH=f"{home}/venv/lib/python{env['PYTHON_VERSION']}/site-packages")
functions = {"Functions": [{
    "Id": env["FUNCTION_NAME"],
    "FunctionArn": env["FUNCTION_ARN"],
    "FunctionConfiguration": {
        "Pinned": True,
        "EncodingType": "binary",
        "MemorySize": int(env["MEMORY_KB"]) + int(env["HANDLER_OVERHEAD_KB"]),
        "Timeout": int(env["TIMEOUT_S"]) + 5,
        "Environment": {
            "Variables": variables,
            "AccessSysfs": False,
            "Execution": {"IsolationMode": "GreengrassContainer"},
            "ResourceAccessPolicies": [
                {"ResourceId": env["RESOURCE_ID"], "Permission": "ro"},
                {"ResourceId": "ggic-home", "Permission": "ro"},
            ],
        },
    },
}]}
resources = {"Resources": [
    {"Id": env["RESOURCE_ID"], "Name": env["RESOURCE_ID"], "ResourceDataContainer": {
        "SageMakerMachineLearningModelResourceData": {"DestinationPath": env["MODEL_PATH"],
                                                      "SageMakerJobArn": env["JOB_ARN"]}}},
    {"Id": "ggic-home", "Name": "ggic-home", "ResourceDataContainer": {
        "LocalVolumeResourceData": {"SourcePath": home, "DestinationPath": home,
                                    "GroupOwnerSetting": {"AutoAddGroupOwner": False}}}},
]}
for name, document in (("function-definition-version.json", functions),
                       ("resource-definition-version.json", resources)):
    with open(f"{out}/{name}", "w") as handle:
        json.dump(document, handle, indent=2)
EOF
say "wrote $OUT/function-definition-version.json and $OUT/resource-definition-version.json"

export AWS_DEFAULT_REGION=$REGION
if ((DRY_RUN)) || ! aws lambda get-function --function-name "$FUNCTION_NAME" >/dev/null 2>&1; then
    run aws lambda create-function --function-name "$FUNCTION_NAME" --runtime "$RUNTIME" \
        --handler connector.image_classification.handler.function_handler --role "$ROLE_ARN" --zip-file "fileb://$ZIP" \
        --timeout "$((TIMEOUT_S + 5))" --memory-size 512
else
    run aws lambda update-function-code --function-name "$FUNCTION_NAME" --zip-file "fileb://$ZIP"
    run aws lambda wait function-updated --function-name "$FUNCTION_NAME"
fi
VERSION=VERSION_FROM_PUBLISH  # the dry run cannot know it
if ((DRY_RUN)); then
    run aws lambda publish-version --function-name "$FUNCTION_NAME" --query Version --output text
else
    printf '+ aws lambda publish-version --function-name %s --query Version --output text\n' "$FUNCTION_NAME"
    VERSION=$(aws lambda publish-version --function-name "$FUNCTION_NAME" --query Version --output text)
fi
if ((DRY_RUN)) || ! aws lambda get-alias --function-name "$FUNCTION_NAME" --name "$ALIAS" >/dev/null 2>&1; then
    run aws lambda create-alias --function-name "$FUNCTION_NAME" --name "$ALIAS" --function-version "$VERSION"
else
    run aws lambda update-alias --function-name "$FUNCTION_NAME" --name "$ALIAS" --function-version "$VERSION"
fi
run aws greengrass create-function-definition --name "ggic-$SERVICE_NAME" \
    --initial-version "file://$OUT/function-definition-version.json"
run aws greengrass create-resource-definition --name "ggic-$SERVICE_NAME-resources" \
    --initial-version "file://$OUT/resource-definition-version.json"

cat <<EOF
==> next: put the two definitions' LatestVersionArn into a new version of your group and deploy it. A group version
    holds one function and one resource definition: if yours has others, add these entries to them instead.
    aws greengrass create-group-version --group-id GROUP_ID \\
        --core-definition-version-arn CORE_VERSION_ARN \\
        --function-definition-version-arn FUNCTION_DEFINITION_VERSION_ARN \\
        --resource-definition-version-arn RESOURCE_DEFINITION_VERSION_ARN
    aws greengrass create-deployment --group-id GROUP_ID --group-version-id GROUP_VERSION_ID \\
        --deployment-type NewDeployment
    Callers invoke $FUNCTION_ARN (see docs/deployment.md: Greengrass v1 group).
EOF
