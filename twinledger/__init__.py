"""TwinLedger composition root: the `twinledger` command assembles the CLIs of api/ and services/."""
__version__ = "0.1.0"
