"""The chain side of TwinLedger: devnet, deployment, typed contract client, event
indexer, audit log and Merkle anchoring. Knows nothing about encryption or HTTP."""
