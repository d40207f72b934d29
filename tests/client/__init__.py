"""Client library tests against an in-memory fake server."""
