"""Core-side IPC library: the HTTP client for the core's Lambda IPC server and a small service facade on top."""
