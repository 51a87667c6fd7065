"""Keep the interpreter's recursion limit safe after py_ecc is imported.

py_ecc (imported by eth-account and web3) raises the recursion limit to 100,000 when it
is imported. With that limit, CPython's C JSON decoder recurses into hostile deeply
nested input (`[[[[…`) until the C stack overflows, and the process dies with a
segmentation fault instead of raising RecursionError. Every TwinLedger process signs or
verifies something, so every one of them imports py_ecc, and every JSON boundary (HTTP
bodies, node answers, model documents) would be a crash switch.

We do not call py_ecc's recursive pairing code, so the limit is put back to a safe cap
right after py_ecc's own import, whoever triggers it: an import hook wraps the loader of
the `py_ecc` package. The cap keeps the C stack use of the deepest JSON parse far below
the 8 MiB thread stacks.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

SAFE_RECURSION_LIMIT = 4000


def cap_recursion_limit() -> None:
    if sys.getrecursionlimit() > SAFE_RECURSION_LIMIT:
        sys.setrecursionlimit(SAFE_RECURSION_LIMIT)


class _CapAfterPyEcc(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib protocol
        if name != "py_ecc":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module, _original=original):  # noqa: ANN001
            try:
                _original(module)
            finally:
                cap_recursion_limit()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Idempotent: cap now if py_ecc is already loaded, else cap right after it loads."""
    if "py_ecc" in sys.modules:
        cap_recursion_limit()
    elif not any(isinstance(f, _CapAfterPyEcc) for f in sys.meta_path):
        sys.meta_path.insert(0, _CapAfterPyEcc())
