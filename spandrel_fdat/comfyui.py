"""The ComfyUI custom-node folder that registers FDAT with spandrel at ComfyUI's start-up.

ComfyUI imports every folder in `ComfyUI/custom_nodes/` at start-up (after its
own upscale-model nodes, which add spandrel_extra_arches to spandrel's main
registry). The folder written here holds one `__init__.py` that calls
`spandrel_fdat.install(ignore_duplicates=True)` and declares one node, "Load Upscale
Model (FDAT)" (`NODE_CLASS_MAPPINGS` below). ComfyUI's own "Load Upscale Model" node
then loads FDAT checkpoints with this package's architecture; the FDAT node also
takes the scale for checkpoints that do not record it. spandrel_fdat must be
installed in ComfyUI's Python. A clone of this repository in `custom_nodes/` does
the same through the repository's own `__init__.py`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "NODE_FOLDER_NAME",
    "SCALE_CHOICES",
    "FDATUpscaleModelLoader",
    "node_source",
    "write_comfyui_node",
]

NODE_FOLDER_NAME = "spandrel-fdat"
"""The folder name to use in `ComfyUI/custom_nodes/` (a name no Python module can have)."""

_MARKER = '"""spandrel-fdat ComfyUI node'

_NODE_SOURCE = f'''{_MARKER}: registers the FDAT architecture of spandrel_fdat with spandrel.

Written by `spandrel-fdat comfyui-node`. ComfyUI imports this folder at start-up;
from then on its "Load Upscale Model" node loads FDAT checkpoints of every layout
with spandrel_fdat, and "Load Upscale Model (FDAT)" takes the scale for checkpoints
that do not record it. Remove the folder to undo it. Needs spandrel_fdat installed in ComfyUI's Python environment.
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

from spandrel_fdat.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
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


SCALE_CHOICES = ("auto", "1", "2", "3", "4")
"""The loader node's scale choice: "auto" is SPANDREL_FDAT_SCALE if set, else `load_model`'s default (stored or
inferred scale)."""


class FDATUpscaleModelLoader:
    """ComfyUI node "Load Upscale Model (FDAT)": an FDAT checkpoint from `upscale_models`, at a chosen scale.

    Returns ComfyUI's UPSCALE_MODEL (a spandrel ImageModelDescriptor with the model
    patcher ComfyUI's "Upscale Image (using Model)" node expects). The scale applies
    only to checkpoints that do not record theirs (LHAN nearest+conv, for example);
    "auto" takes SPANDREL_FDAT_SCALE, as ComfyUI's own loader does, else `load_model`'s choice. Errors are `load_model`'s, word for word.
    ComfyUI's modules are imported only when the node runs.
    """

    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load"
    DESCRIPTION = "Loads an FDAT upscale model; the scale is used for checkpoints that do not record theirs."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        import folder_paths  # ComfyUI's

        return {
            "required": {
                "model_name": (folder_paths.get_filename_list("upscale_models"),),
                "scale": (list(SCALE_CHOICES), {"default": "auto"}),
            }
        }

    def load(self, model_name: str, scale: str) -> tuple[Any]:
        import folder_paths
        from comfy import model_management, model_patcher

        from .arch import _env_scale, load_model
        from .errors import interface

        path = folder_paths.get_full_path_or_raise("upscale_models", model_name)
        # "auto" honours SPANDREL_FDAT_SCALE as ComfyUI's own loader does, so a guessed scale's warning
        # names the same remedies (the host's) from both loader nodes
        with interface("host"):
            model = load_model(path, scale=_env_scale() if scale == "auto" else int(scale)).eval()
        # what ComfyUI's upscale node moves between devices
        model.patcher = model_patcher.CoreModelPatcher(
            model.model,
            load_device=model_management.get_torch_device(),
            offload_device=model_management.unet_offload_device(),
        )
        return (model,)


NODE_CLASS_MAPPINGS: dict[str, type] = {"FDATUpscaleModelLoader": FDATUpscaleModelLoader}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"FDATUpscaleModelLoader": "Load Upscale Model (FDAT)"}
