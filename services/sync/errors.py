"""Errors of the twin sync service (services/sync). Nothing here knows about HTTP.

    SyncError                             root: the sync service cannot go on
    ├── SyncConfigError (ValueError)      bad arguments (asset ids, poll interval, the
    │                                     test pause hook) — raised by the constructor
    ├── SyncBusyError                     another sync process holds DIR's lock
    └── SyncStateError                    DIR is unusable: not a directory, its checkpoint
                                          belongs to another organisation, or a layout
                                          operation (commit, pointer switch) failed

Failures of one asset or version (node unreachable, a denied key release that is not a
grant ending, an integrity error while opening) are not raised: they are collected in
`SyncReport.errors` and retried on the next pass.
"""
from __future__ import annotations


class SyncError(Exception):
    """Root of every sync service error."""


class SyncConfigError(SyncError, ValueError):
    """A constructor argument or the test pause hook is malformed."""


class SyncBusyError(SyncError):
    """Another process is syncing into the same directory."""


class SyncStateError(SyncError):
    """The sync directory or its checkpoint cannot be used."""
