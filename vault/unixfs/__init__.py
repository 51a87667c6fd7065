"""UnixFS files exactly as Kubo imports them (balanced layout, fixed-size chunks).

    PROFILES, DEFAULT_PROFILE, Profile     CID-determining parameters, by name
    resolve_profile(name | Profile)        -> Profile (InputValidationError if unknown)
    Importer(profile, put_block)           streaming: write(piece)…, finish() -> root CID
    import_bytes / import_stream           one-shot helpers
    export(root, get_block)                verified streaming read of a file
"""
from vault.unixfs._exporter import export
from vault.unixfs._importer import Importer, import_bytes, import_stream
from vault.unixfs._profiles import DEFAULT_PROFILE, PROFILES, Profile, resolve_profile

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Importer", "Profile", "export", "import_bytes", "import_stream", "resolve_profile"]
