"""ComfyUI's start-up and upscale-model path, step by step (reproduced, not copied).

ComfyUI has no plugin mechanism for spandrel architectures; FDAT reaches it
through a custom-node folder (spandrel_fdat/comfyui.py writes it). Read from
comfyanonymous/ComfyUI:

- nodes.py, `init_extra_nodes`: first `init_builtin_extra_nodes` (among them
  comfy_extras/nodes_upscale_model.py, whose module body imports spandrel and, if it
  can, does `MAIN_REGISTRY.add(*EXTRA_REGISTRY)` inside a bare try/except), then
  `init_external_custom_nodes`, which calls `load_custom_node` on every entry of
  custom_nodes/;
- nodes.py, `load_custom_node`: for a folder, `importlib.util.spec_from_file_location`
  on its `__init__.py` under a module name made from the path (`.` replaced by `_x_`;
  releases before that used the folder's bare name), `module_from_spec`, an entry in
  `sys.modules`, `spec.loader.exec_module`; the folder counts as loaded when it has a
  non-None `NODE_CLASS_MAPPINGS`, whose entries become nodes;
- comfy_extras/nodes_upscale_model.py, `UpscaleModelLoader` (`load_model`, now
  `execute`): `comfy.utils.load_torch_file(path, safe_load=True)`, the SwinIR `module.`
  special case, `ModelLoader().load_from_state_dict(sd).eval()`, and a check that the
  result is an `ImageModelDescriptor`;
- comfy/utils.py, `load_torch_file`: safetensors' `load_file` for `.safetensors`, else
  `torch.load(..., weights_only=True)`, then the value under `"state_dict"` if there is one;
- comfy_extras/nodes_upscale_model.py, `ImageUpscaleWithModel.upscale`: the IMAGE
  (B, H, W, C) moved to (B, C, H, W), run through `comfy.utils.tiled_scale` (which, for an
  image within one 512 px tile, is one call of the model), clamped to [0, 1], moved back.

Run as a script, it loads the custom-node folders given with --node the way ComfyUI
does, then every checkpoint given, and prints one JSON line; tests/test_hosts.py
imports the functions as well.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from spandrel import MAIN_REGISTRY, ImageModelDescriptor, ModelLoader

NODE_CLASS_MAPPINGS: dict[str, Any] = {}


def builtin_upscale_model_nodes() -> bool:
    """The module body of comfy_extras/nodes_upscale_model.py: spandrel_extra_arches, if installed."""
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY

        MAIN_REGISTRY.add(*EXTRA_REGISTRY)
    except Exception:
        return False
    return True


def load_custom_node(module_path: str, *, bare_name: bool = False) -> bool:
    """Import a custom-node folder as ComfyUI does; True when ComfyUI would count it as loaded."""
    name = os.path.basename(module_path) if bare_name else module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is None:
        return False
    NODE_CLASS_MAPPINGS.update(mappings)
    return True


def load_torch_file(path: str) -> dict[str, Any]:
    if path.lower().endswith((".safetensors", ".sft")):
        return safetensors.torch.load_file(path, device="cpu")
    loaded = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
    if "state_dict" in loaded:  # a Lightning-style wrapper
        return loaded["state_dict"]
    return loaded


def load_upscale_model(path: str) -> ImageModelDescriptor[Any]:
    state_dict = load_torch_file(path)
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in state_dict:
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    model = ModelLoader().load_from_state_dict(state_dict).eval()
    if not isinstance(model, ImageModelDescriptor):
        raise TypeError("Upscale model must be a single-image model.")
    return model


def upscale(model: ImageModelDescriptor[Any], image: torch.Tensor) -> torch.Tensor:
    """`image`: a ComfyUI IMAGE, (B, H, W, C) float in [0, 1]."""
    model.to(torch.device("cpu"))
    in_img = image.movedim(-1, -3)
    with torch.no_grad():  # ComfyUI runs nodes in inference mode
        out = model(in_img)
    return torch.clamp(out.movedim(-3, -1), min=0, max=1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node", action="append", default=[])
    parser.add_argument("checkpoints", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)

    report: dict[str, Any] = {"extra_arches": builtin_upscale_model_nodes()}
    report["registered_before_nodes"] = "spandrel_fdat.FDAT" in MAIN_REGISTRY
    report["nodes_loaded"] = [load_custom_node(path) for path in args.node]
    report["node_class_mappings"] = sorted(NODE_CLASS_MAPPINGS)
    report["files"] = []
    for path in args.checkpoints:
        model = load_upscale_model(path)
        image = torch.rand(1, 11, 13, model.input_channels, generator=torch.Generator().manual_seed(0))
        out = upscale(model, image)
        report["files"].append(
            {
                "file": Path(path).name,
                "id": str(model.architecture.id),
                "name": model.architecture.name,
                "scale": model.scale,
                "output": list(out.shape),
                "finite": bool(torch.isfinite(out).all()),
            }
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
