"""The supply-chain pilot: deterministic twin models and plant sensor data (see data.py)."""
