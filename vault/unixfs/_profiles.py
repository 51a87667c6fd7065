"""Import profiles: every parameter that changes a file's CID, pinned by name.

The table mirrors ../shared/testdata/unixfs/vectors.json "profiles" (a test compares them).
"""
from __future__ import annotations

from dataclasses import dataclass

from vault.errors import InputValidationError

BLOCK_SIZE_LIMIT = 1 << 20  # Kubo refuses chunks above 1 MiB (helpers.BlockSizeLimit)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    cid_version: int
    raw_leaves: bool
    chunk_size: int
    max_links: int
    layout: str = "balanced"

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise InputValidationError(f"profile {self.name}: cid_version must be 0 or 1")
        if self.cid_version == 0 and self.raw_leaves:
            raise InputValidationError(f"profile {self.name}: raw leaves need CIDv1")
        if not 1 <= self.chunk_size <= BLOCK_SIZE_LIMIT:
            raise InputValidationError(f"profile {self.name}: chunk_size must be 1..{BLOCK_SIZE_LIMIT}")
        if self.max_links < 2:
            raise InputValidationError(f"profile {self.name}: max_links must be >= 2")
        if self.layout != "balanced":
            raise InputValidationError(f"profile {self.name}: only the balanced layout is supported")


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("v0", cid_version=0, raw_leaves=False, chunk_size=262144, max_links=174),
        Profile("v1", cid_version=1, raw_leaves=True, chunk_size=262144, max_links=174),
        Profile("v1-no-raw", cid_version=1, raw_leaves=False, chunk_size=262144, max_links=174),
        Profile("unixfs-v1-2025", cid_version=1, raw_leaves=True, chunk_size=1048576, max_links=1024),
    )
}
DEFAULT_PROFILE = "unixfs-v1-2025"


def resolve_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except (KeyError, TypeError):
        raise InputValidationError(
            f"unknown import profile {profile!r}; known: {', '.join(PROFILES)}") from None
