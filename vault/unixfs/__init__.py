"""UnixFS files exactly as Kubo imports them (balanced layout, fixed-size chunks).

    PROFILES, DEFAULT_PROFILE, Profile     CID-determining parameters, by name
    resolve_profile(name | Profile)        -> Profile (InputValidationError if unknown)
    Importer(profile, put_block)           streaming: write(piece)…, finish() -> root CID
    import_bytes / import_stream           one-shot helpers
    export(root, get_block)                verified streaming read of a file
    dag_stat(root, get_block)              -> DagStat(size, dag_size) from the root block
"""
from vault.unixfs._exporter import DagStat, dag_stat, export
from vault.unixfs._importer import Importer, import_bytes, import_stream
from vault.unixfs._profiles import DEFAULT_PROFILE, PROFILES, Profile, resolve_profile

__all__ = ["DEFAULT_PROFILE", "PROFILES", "DagStat", "Importer", "Profile", "dag_stat", "export", "import_bytes", "import_stream", "resolve_profile"]
