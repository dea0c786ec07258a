"""spandrel-fdat autoload hook: registers spandrel_fdat's FDAT with spandrel as soon as spandrel is imported.

`spandrel-fdat autoload enable` copies this file into site-packages as
`_spandrel_fdat_autoload.py`, next to `spandrel_fdat_autoload.pth`, whose one
import line imports it at interpreter start-up (only while this file still
exists). `spandrel-fdat autoload disable` removes both files.

At start-up it only puts a finder at the front of `sys.meta_path`: it uses the
standard library alone and imports neither torch, nor spandrel, nor
spandrel_fdat. The finder answers for two names only, `spandrel` and
`spandrel_fdat`; for those it hands out the real spec with a loader that runs
the real one and then calls `spandrel_fdat.install(ignore_duplicates=True)`
(idempotent), so FDAT is in `spandrel.MAIN_REGISTRY` before the `import spandrel`
statement returns. When spandrel is imported by spandrel_fdat itself, the
registration waits until spandrel_fdat has finished importing.

If spandrel_fdat is no longer installed, the hook does nothing and prints
nothing. Setting SPANDREL_FDAT_AUTOLOAD=0 turns it off for one process.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

ENV_SWITCH = "SPANDREL_FDAT_AUTOLOAD"
_WATCHED = frozenset({"spandrel", "spandrel_fdat"})
_fdat_importing = 0  # > 0 while spandrel_fdat's own module body runs


def _is_fdat(name: str) -> bool:
    """spandrel_fdat or one of its modules (which import spandrel lazily, on first use)."""
    return name == "spandrel_fdat" or name.startswith("spandrel_fdat.")


class _RegisteringLoader:
    """The real loader of `spandrel` or `spandrel_fdat`, followed by the registration."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def __getattr__(self, attr: str) -> Any:  # anything else: the real loader's
        if attr in ("_loader", "_name"):  # not set yet (an instance made without __init__)
            raise AttributeError(attr)
        return getattr(self._loader, attr)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        global _fdat_importing
        is_fdat = _is_fdat(self._name)
        if is_fdat:
            _fdat_importing += 1
        try:
            self._loader.exec_module(module)
        finally:
            if is_fdat:
                _fdat_importing -= 1
            # From here on the module shows its real loader (importlib.resources, inspect, reload).
            module.__loader__ = self._loader
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = self._loader
        if _fdat_importing == 0 and "spandrel" in sys.modules:  # spandrel_fdat alone imports no spandrel
            _register()


class _Finder:
    """Finds nothing itself: wraps the loader that the other finders give for the watched names."""

    spandrel_fdat_autoload = True  # how another copy of this hook recognises it

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> ModuleSpec | None:
        if fullname not in _WATCHED and not _is_fdat(fullname):
            return None
        for finder in sys.meta_path:
            if getattr(finder, "spandrel_fdat_autoload", False):
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _RegisteringLoader):
            spec.loader = _RegisteringLoader(loader, fullname)
        return spec

    def invalidate_caches(self) -> None:
        pass


def _register() -> None:
    """Register FDAT in spandrel's main registry; silent when spandrel_fdat is not installed."""
    try:
        import importlib.util

        if importlib.util.find_spec("spandrel_fdat") is None:
            return
        import spandrel_fdat

        spandrel_fdat.install(ignore_duplicates=True)
    except Exception as error:
        import warnings

        warnings.warn(
            f"spandrel-fdat autoload: FDAT was not registered with spandrel ({type(error).__name__}: {error}); "
            "`spandrel-fdat autoload disable` removes this hook",
            RuntimeWarning,
            stacklevel=2,
        )


def _activate() -> None:
    if os.environ.get(ENV_SWITCH, "").strip().lower() in {"0", "false", "no", "off"}:
        return
    if any(getattr(finder, "spandrel_fdat_autoload", False) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    if "spandrel" in sys.modules:  # imported before this hook (not at start-up): register now
        _register()


_activate()
