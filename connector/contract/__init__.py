"""What the local core and its connectors agree on, so that neither imports the other.

The connector catalog and its parameter schemas (`catalog`, `schemas`), problems in the Greengrass API's shape
(`problems`), every `GGIC_*` environment variable (`environment`), the interface of a natively hosted connector and
its typed status (`hosting`, `status`), the supervision of child processes (`supervision`, `processes`) and the
Greengrass log line format (`logformat`). This package imports nothing from the core or from a connector.
"""
