"""The control plane: what `ggic` creates and checks before anything runs, in the AWS CLI's shapes.

`connector_definitions` (CreateConnectorDefinition validated), `definition_store` (connector, resource and
subscription definitions kept in the state directory), `subscriptions`, `groups` (groups, versions, deployment
records and their checks), `fetch_model` (a training job's model, into place), `deployments` (a group deployment
made: checked, models fetched, handed to the runtime) and `cli` (one module per command family).
"""
