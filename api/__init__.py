"""An organisation's node: FastAPI app, request authentication, key release, use cases
that combine ledger + vault, the Python SDK client, and the CLI."""
