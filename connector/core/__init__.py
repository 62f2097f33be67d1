"""The local Greengrass v1 core: the IPC server and the host of the group's long-lived functions.

Where a request goes: `ipc_server` (HTTP routes, body and token checks) → `invocations` (per-function work queues,
deadlines, results) → a connector hosted in this process (`native`: the connector's handler is called directly) or
a Lambda's process (`functions`, whose `lambda_runtime` loop gets work and posts the result). `router` and
`mqtt_bridge` route published messages, `deployments` switches group generations, `runtime` ties it together for
`ggic run`. It knows the connectors only through the catalog and `connector.contract.hosting`.
"""
