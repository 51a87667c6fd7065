"""Consumers built on the SDK: twin sync, compute-to-data analytics, the supply-chain pilot."""
