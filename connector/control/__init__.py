"""The control plane: what `ggic` creates and checks before anything runs, in the AWS CLI's shapes.

`connector_definitions`, `definitions` (stored definitions), `subscriptions`, `groups` (groups, versions,
deployments and their checks), `fetch_model` (a training job's model, into place) and `cli` (one module per command
family).
"""
