"""ComfyUI node pack: this repository cloned into `ComfyUI/custom_nodes/` registers FDAT.

ComfyUI imports this file at start-up. It loads the `spandrel_fdat` package from
this folder (under its own name, without putting the repository on `sys.path`),
registers FDAT with spandrel (ComfyUI's "Load Upscale Model" then loads FDAT
checkpoints) and offers the "Load Upscale Model (FDAT)" node. The dependencies
are in requirements.txt, which ComfyUI-Manager and `comfy node install` install.
Not part of the `spandrel-fdat` Python package.
"""

import importlib.util
import logging
import sys
from pathlib import Path

if "spandrel_fdat" not in sys.modules:
    _package = Path(__file__).resolve().parent / "spandrel_fdat"
    _spec = importlib.util.spec_from_file_location(
        "spandrel_fdat", _package / "__init__.py", submodule_search_locations=[str(_package)]
    )
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["spandrel_fdat"] = _module
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        del sys.modules["spandrel_fdat"]
        raise

import spandrel_fdat
from spandrel_fdat.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

_added = spandrel_fdat.install(ignore_duplicates=True)
logging.info(
    "spandrel-fdat %s (%s): FDAT %s spandrel",
    spandrel_fdat.__version__,
    Path(spandrel_fdat.__file__).parent,
    "registered with" if _added else "already in",
)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
