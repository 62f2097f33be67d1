"""Device tools: `ggic doctor` (`doctor`, with `elf` reading shared libraries' symbol versions), the platform
check of a connector against this machine (`platforms`) and the connector's Lambda deployment package
(`packaging`, `make lambda-zip`)."""
