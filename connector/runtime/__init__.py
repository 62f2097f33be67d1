"""A local Greengrass v1 runtime: the IPC server and the host for long-lived Lambda functions.

Where a request goes: `ipc_server` (HTTP routes) → `invocations` (per-function work queues and results) →
`functions` (the process of each long-lived function) → `lambda_runtime` (inside that process: get work, call
`function_handler(event, context)`, post the result). `runtime` ties them together for `ggic run`.
"""
