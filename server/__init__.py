"""The trio node process: transport, multi-raft driver, request handlers, CLI."""
