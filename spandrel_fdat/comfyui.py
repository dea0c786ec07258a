"""The ComfyUI custom-node folder that registers FDAT with spandrel at ComfyUI's start-up.

ComfyUI imports every folder in `ComfyUI/custom_nodes/` at start-up (after its
own upscale-model nodes, which add spandrel_extra_arches to spandrel's main
registry). The folder written here holds one `__init__.py` that calls
`spandrel_fdat.install(ignore_duplicates=True)` and declares no nodes
(`NODE_CLASS_MAPPINGS = {}`): ComfyUI's own "Load Upscale Model" node then
loads FDAT checkpoints with this package's architecture. spandrel_fdat must be
installed in ComfyUI's Python.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["NODE_FOLDER_NAME", "node_source", "write_comfyui_node"]

NODE_FOLDER_NAME = "spandrel-fdat"
"""The folder name to use in `ComfyUI/custom_nodes/` (a name no Python module can have)."""

_MARKER = '"""spandrel-fdat ComfyUI node'

_NODE_SOURCE = f'''{_MARKER}: registers the FDAT architecture of spandrel_fdat with spandrel.

Written by `spandrel-fdat comfyui-node`. ComfyUI imports this folder at start-up;
from then on its "Load Upscale Model" node loads FDAT checkpoints of every layout
with spandrel_fdat. This node declares no nodes of its own. Remove the folder to
undo it. Needs spandrel_fdat installed in ComfyUI's Python environment.
"""

import logging

try:
    import spandrel_fdat
except ImportError as error:
    raise ImportError(
        "spandrel-fdat ComfyUI node: the spandrel_fdat package is not installed in ComfyUI's Python "
        "(install it with that Python's pip)"
    ) from error

_added = spandrel_fdat.install(ignore_duplicates=True)
logging.info("spandrel-fdat %s: FDAT %s spandrel", spandrel_fdat.__version__, "registered with" if _added else "already in")

NODE_CLASS_MAPPINGS: dict = {{}}
NODE_DISPLAY_NAME_MAPPINGS: dict = {{}}
'''


def node_source() -> str:
    """The custom node's `__init__.py`."""
    return _NODE_SOURCE


def _shadows_a_module(name: str) -> bool:
    """ComfyUI releases before the `_x_` module names register a folder in sys.modules under its bare name."""
    if not name.isidentifier():
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return True


def write_comfyui_node(path: str | os.PathLike[str]) -> Path:
    """Write the custom-node folder at `path` (created if missing); returns its `__init__.py`.

    Copy or link the folder into `ComfyUI/custom_nodes/`. Rewriting a folder
    written earlier is allowed; a file, a folder holding other files, or a folder
    name that is an importable module's (ComfyUI would shadow it) raise ValueError.
    """
    folder = Path(path)
    init = folder / "__init__.py"
    if _shadows_a_module(folder.name):
        raise ValueError(
            f"{folder}: a custom-node folder named {folder.name!r} would shadow the Python module "
            f"{folder.name!r} in ComfyUI; use another name, e.g. {NODE_FOLDER_NAME!r}"
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: exists and is not a folder")
    if folder.is_dir():
        ours = init.is_file() and init.read_text(encoding="utf-8", errors="replace").startswith(_MARKER)
        others = [p.name for p in folder.iterdir() if p.name not in ("__init__.py", "__pycache__")]
        if (init.exists() and not ours) or others:
            raise ValueError(
                f"{folder}: folder is not empty and not a spandrel-fdat node; "
                f"give a new folder, e.g. {folder / NODE_FOLDER_NAME}"
            )
    folder.mkdir(parents=True, exist_ok=True)
    init.write_text(node_source(), encoding="utf-8")
    return init
