"""An organisation's node: FastAPI app, request authentication, key release, use cases
that combine ledger + vault, the Python SDK client, and the CLI."""

import ledger as _ledger  # noqa: F401  (installs the recursion-limit guard, see ledger/_recursion.py)
