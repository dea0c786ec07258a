"""Opt-in auto-registration: a start-up hook that registers FDAT whenever spandrel is imported.

For hosts that only `import spandrel` and have no plugin mechanism (chaiNNer,
scripts). `enable_autoload()` writes two files into a site-packages directory
(by default the running environment's, `sysconfig.get_path("purelib")`):

- `spandrel_fdat_autoload.pth`: a comment line and one import line, run by
  Python's `site` module at every start-up. The line imports the hook module
  only if `importlib.util.find_spec` still finds it, so a missing hook module
  costs nothing and prints nothing.
- `_spandrel_fdat_autoload.py`: the hook (a copy of `spandrel_fdat/_autoload_hook.py`).
  Standard library only; it puts a `sys.meta_path` finder in place that calls
  `spandrel_fdat.install(ignore_duplicates=True)` right after spandrel's own
  import has finished. torch, spandrel and spandrel_fdat are not imported at
  start-up. If spandrel_fdat is uninstalled later, the hook stays silent.

The hook lives next to its `.pth` file so that it is importable while `site`
processes that directory, whatever the order of the site directories;
spandrel_fdat itself is looked up only when spandrel is imported, once
`sys.path` is complete. Both files are recognised by their first line; files of
the same names written by someone else are never overwritten or removed.
`disable_autoload()` removes both (and the hook's cached bytecode).
"""

from __future__ import annotations

import importlib.resources
import os
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "ENV_SWITCH",
    "HOOK_MODULE",
    "HOOK_NAME",
    "PTH_NAME",
    "AutoloadError",
    "AutoloadStatus",
    "autoload_status",
    "default_site_dir",
    "disable_autoload",
    "enable_autoload",
    "hook_source",
    "pth_source",
    "startup_site_dirs",
]

PTH_NAME = "spandrel_fdat_autoload.pth"
HOOK_MODULE = "_spandrel_fdat_autoload"
HOOK_NAME = f"{HOOK_MODULE}.py"
ENV_SWITCH = "SPANDREL_FDAT_AUTOLOAD"
"""Environment variable: 0/false/no/off turns the installed hook off for one process."""

_PTH_MARKER = "# spandrel-fdat autoload"
_HOOK_MARKER = '"""spandrel-fdat autoload hook'

State = Literal["enabled", "disabled", "outdated", "incomplete", "conflict"]


class AutoloadError(Exception):
    """A file in the way (same name, not written by spandrel-fdat)."""


def pth_source() -> str:
    """The `.pth` file: comments, then the one line that `site` executes at start-up."""
    return (
        f"{_PTH_MARKER}: registers spandrel_fdat's FDAT with spandrel when spandrel is imported.\n"
        "# Written by `spandrel-fdat autoload enable`; remove with `spandrel-fdat autoload disable`.\n"
        f"import importlib.util as _u; _u.find_spec({HOOK_MODULE!r}) is not None and __import__({HOOK_MODULE!r})\n"
    )


def hook_source() -> str:
    """The hook module's source (this version's)."""
    return importlib.resources.files("spandrel_fdat").joinpath("_autoload_hook.py").read_text(encoding="utf-8")


def default_site_dir() -> Path:
    """The running environment's site-packages (`sysconfig`'s purelib)."""
    return Path(sysconfig.get_path("purelib"))


def startup_site_dirs() -> list[Path]:
    """The directories whose `.pth` files this interpreter runs at start-up."""
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [Path(d) for d in dirs]


@dataclass(frozen=True)
class AutoloadStatus:
    """What `autoload_status` found in one site directory."""

    site_dir: Path
    pth_file: Path
    hook_file: Path
    pth_present: bool
    """`pth_file` exists and was written by spandrel-fdat."""
    hook_present: bool
    """`hook_file` exists and was written by spandrel-fdat."""
    hook_current: bool
    """The hook is this version's (otherwise `enable_autoload` refreshes it)."""
    foreign: tuple[Path, ...]
    """Files with our names that spandrel-fdat did not write."""
    read_at_startup: bool
    """`site_dir` is one of this interpreter's start-up site directories."""
    loaded: bool
    """The hook module was imported in this process (i.e. it ran at this interpreter's start-up)."""

    @property
    def state(self) -> State:
        if self.foreign:
            return "conflict"
        if self.pth_present and self.hook_present:
            return "enabled" if self.hook_current else "outdated"
        if self.pth_present or self.hook_present:
            return "incomplete"
        return "disabled"

    @property
    def enabled(self) -> bool:
        """Both files in place: every new interpreter reading `site_dir` registers FDAT."""
        return self.state in ("enabled", "outdated")


def _resolve(site_dir: str | os.PathLike[str] | None) -> Path:
    return default_site_dir() if site_dir is None else Path(site_dir)


def _owned(path: Path, marker: str) -> bool | None:
    """None: absent; True: ours; False: someone else's."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.readline().startswith(marker)
    except OSError:
        return False


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def autoload_status(site_dir: str | os.PathLike[str] | None = None) -> AutoloadStatus:
    """Where the hook stands in `site_dir` (default: the running environment's site-packages)."""
    directory = _resolve(site_dir)
    pth, hook = directory / PTH_NAME, directory / HOOK_NAME
    pth_owned, hook_owned = _owned(pth, _PTH_MARKER), _owned(hook, _HOOK_MARKER)
    hook_current = False
    if hook_owned:
        try:
            hook_current = hook.read_text(encoding="utf-8") == hook_source()
        except OSError:
            hook_current = False
    return AutoloadStatus(
        site_dir=directory,
        pth_file=pth,
        hook_file=hook,
        pth_present=bool(pth_owned),
        hook_present=bool(hook_owned),
        hook_current=hook_current,
        foreign=tuple(p for p, owned in ((pth, pth_owned), (hook, hook_owned)) if owned is False),
        read_at_startup=any(_same_dir(directory, d) for d in startup_site_dirs()),
        loaded=HOOK_MODULE in sys.modules,
    )


def _write(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader at start-up never sees half a file)."""
    if path.is_file():
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except OSError:
            pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _refuse_foreign(status: AutoloadStatus) -> None:
    if status.foreign:
        names = ", ".join(str(p) for p in status.foreign)
        raise AutoloadError(f"{names}: not written by spandrel-fdat; move it away first (left untouched)")


def enable_autoload(site_dir: str | os.PathLike[str] | None = None) -> Path:
    """Install the start-up hook into `site_dir` (default: this environment's site-packages).

    Idempotent: files already in place are left as they are; an outdated hook
    is refreshed. Returns the `.pth` file's path. Raises AutoloadError if a file
    of the same name was not written by spandrel-fdat, OSError if the directory
    cannot be written.
    """
    status = autoload_status(site_dir)
    _refuse_foreign(status)
    status.site_dir.mkdir(parents=True, exist_ok=True)
    _write(status.hook_file, hook_source())  # the hook first: the .pth never points at a missing module
    _write(status.pth_file, pth_source())
    return status.pth_file


def disable_autoload(site_dir: str | os.PathLike[str] | None = None) -> bool:
    """Remove the start-up hook from `site_dir` (default: this environment's site-packages).

    Returns whether anything was removed (False: it was not enabled there).
    Processes already running keep their registration. Raises AutoloadError,
    removing nothing, if a file of the same name was not written by spandrel-fdat.
    """
    status = autoload_status(site_dir)
    _refuse_foreign(status)
    removed = False
    for present, path in ((status.pth_present, status.pth_file), (status.hook_present, status.hook_file)):
        if present:  # the .pth first: a start-up in between never imports a half-removed hook
            path.unlink(missing_ok=True)
            removed = True
    cache = status.site_dir / "__pycache__"
    if cache.is_dir():
        for compiled in cache.glob(f"{HOOK_MODULE}.*.pyc"):
            compiled.unlink(missing_ok=True)
    return removed
