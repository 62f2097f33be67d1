"""The ML Feedback connector: uploads model inputs to Amazon S3 and publishes the matching predictions.

Two entries, one request path: `hosting` (natively in our runtime) and `handler` (a long-lived Lambda on a core)
both run `endpoint`. The logic is plain Python with no Greengrass wiring, so it can be tested against S3 alone:
`configuration` reads the connector's parameters, `sampling` decides which samples to keep, `messages` builds what
the connector publishes, and `service` ties them together behind a bounded request queue.
"""
