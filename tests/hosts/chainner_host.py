"""chaiNNer's model handling, step by step, as its PyTorch nodes do it (reproduced, not copied).

chaiNNer has no plugin mechanism for spandrel architectures and pins spandrel
0.4.1, so FDAT reaches it through the autoload hook: its backend only does
`import spandrel`. Read from chaiNNer-org/chaiNNer:

- backend/src/packages/chaiNNer_pytorch/pytorch/io/load_model.py, `load_model_node`:
  `ModelLoader(device).load_from_file(path)`, every parameter `requires_grad = False`,
  `.model.eval()`, `.to(device)`, then `.model.half()` when fp16 is on and
  `supports_half`, else `.model.float()`;
- backend/src/packages/chaiNNer_pytorch/pytorch/processing/upscale_image.py, `upscale`:
  under `torch.no_grad()`, fp16 only when `use_fp16 and model.supports_half`;
- backend/src/packages/chaiNNer_pytorch/pytorch/io/save_model.py, `save_model_node`:
  `torch.save(model.model.state_dict(), path)` or safetensors' `save_file(...)`;
- backend/src/packages/chaiNNer_pytorch/pytorch/utility/interpolate_models.py,
  `perform_interp` (`(1 - t) * a + t * b` for every key, so integer buffers such as
  MetaUpsample come out float), `check_can_interp` (loads the 50 % blend on the CPU and
  runs it on a small all-ones image) and `interpolate_models_node` (loads the blend).
- spandrel_extra_arches is registered with `MAIN_REGISTRY.add(*EXTRA_REGISTRY)`,
  without ignore_duplicates (shared/fdat-variants.md §9).

Run as a script (a fresh interpreter whose site-packages has the autoload hook),
it prints one JSON line; tests/test_hosts.py imports the functions as well.
It imports only what chaiNNer itself has: torch, spandrel, safetensors, numpy.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

STARTUP_MODULES = sorted(sys.modules)  # before torch and spandrel: what start-up (site, .pth files) imported

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# chaiNNer's backend imports spandrel; with autoload enabled, FDAT is registered during this import.
from spandrel import MAIN_REGISTRY, ImageModelDescriptor, ModelDescriptor, ModelLoader  # noqa: E402

REGISTERED_ON_IMPORT = "spandrel_fdat.FDAT" in MAIN_REGISTRY  # a host never imports spandrel_fdat itself


def load_model_node(path: str | Path, *, device: torch.device, use_fp16: bool) -> ModelDescriptor:
    descriptor = ModelLoader(device).load_from_file(path)
    for _, parameter in descriptor.model.named_parameters():
        parameter.requires_grad = False
    descriptor.model.eval()
    descriptor = descriptor.to(device)
    if use_fp16 and descriptor.supports_half:
        descriptor.model.half()
    else:
        descriptor.model.float()
    return descriptor


def upscale(model: ImageModelDescriptor[Any], image: torch.Tensor, *, use_fp16: bool) -> torch.Tensor:
    """`image`: (1, C, H, W) float32 in [0, 1]; the result as float32, clipped like chaiNNer's auto-split."""
    with torch.no_grad():
        dtype = torch.half if use_fp16 and model.supports_half else torch.float32
        result = model(image.to(model.device, dtype))
        return result.float().clamp(0, 1).cpu()


def save_model_node(model: ModelDescriptor, directory: Path, name: str, weight_format: str) -> Path:
    full_path = (directory / f"{name}.{weight_format}").resolve()
    full_path.parent.mkdir(parents=True, exist_ok=True)
    if weight_format == "pth":
        torch.save(model.model.state_dict(), full_path)
    elif weight_format == "safetensors":
        save_file(model.model.state_dict(), full_path)
    else:
        raise ValueError(f"Unknown weight format: {weight_format}")
    return full_path


def perform_interp(model_a: dict[str, Any], model_b: dict[str, Any], amount: int) -> dict[str, Any]:
    amount_b = amount / 100
    amount_a = 1 - amount_b
    return {key: amount_a * value + amount_b * model_b[key] for key, value in model_a.items()}


def check_can_interp(model_a: dict[str, Any], model_b: dict[str, Any]) -> float | None:
    """chaiNNer's check, up to its last step: None if the keys differ, else the mean of the output.

    (chaiNNer then asks for a mean above 0.5: a trained model maps white to bright.
    The bundled fixtures have random weights, so the tests do not ask for that.)
    """
    if model_a.keys() != model_b.keys():
        return None
    blend = perform_interp(model_a, model_b, 50)
    descriptor = ModelLoader(torch.device("cpu")).load_from_state_dict(blend)
    size = max(descriptor.size_requirements.minimum, 3)
    size = size + (size % descriptor.size_requirements.multiple_of)
    image = torch.ones(1, descriptor.input_channels, size, size)
    with torch.no_grad():
        assert isinstance(descriptor, ImageModelDescriptor)
        output = descriptor(image)
    return float(output.mean())


def interpolate_models_node(
    model_a: ModelDescriptor, model_b: ModelDescriptor, amount: int, *, device: torch.device
) -> ModelDescriptor:
    state_a = model_a.model.state_dict()
    state_b = model_b.model.state_dict()
    if check_can_interp(state_a, state_b) is None:
        raise ValueError("These models are not compatible and not able to be interpolated together")
    return ModelLoader(device).load_from_state_dict(perform_interp(state_a, state_b, amount))


def perturbed(state_dict: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A second state dict of the same shapes (another training run of the same network)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: value + 0.05 * torch.randn(value.shape, generator=generator).to(value.dtype)
        if value.is_floating_point()
        else value.clone()
        for key, value in state_dict.items()
    }


def describe(model: ModelDescriptor) -> dict[str, Any]:
    return {"id": str(model.architecture.id), "name": model.architecture.name, "scale": model.scale, "tags": model.tags}


def main(paths: list[str]) -> None:
    import spandrel

    try:
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        extra = False
    else:
        spandrel.MAIN_REGISTRY.add(*EXTRA_REGISTRY)
        extra = True

    torch.set_num_threads(1)
    device = torch.device("cpu")
    report: dict[str, Any] = {
        "startup_modules": STARTUP_MODULES,
        "spandrel": spandrel.__version__,
        "registered_on_import": REGISTERED_ON_IMPORT,
        "extra_arches": extra,
        "files": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for path in paths:
            model = load_model_node(path, device=device, use_fp16=True)
            assert isinstance(model, ImageModelDescriptor)
            image = torch.rand(1, model.input_channels, 12, 10, generator=torch.Generator().manual_seed(0))
            output = upscale(model, image, use_fp16=True)
            entry: dict[str, Any] = {
                "file": Path(path).name,
                **describe(model),
                "dtype": str(next(model.model.parameters()).dtype),
                "output": list(output.shape),
                "finite": bool(torch.isfinite(output).all()),
                "reloaded": [],
            }
            for weight_format in ("pth", "safetensors"):
                saved = save_model_node(model, Path(scratch), Path(path).stem, weight_format)
                entry["reloaded"].append(describe(load_model_node(saved, device=device, use_fp16=False)))
            fp32 = load_model_node(path, device=device, use_fp16=False)
            other = ModelLoader(device).load_from_state_dict(perturbed(fp32.model.state_dict(), seed=1))
            blend = interpolate_models_node(fp32, other, 50, device=device)
            entry["interpolated"] = describe(blend)
            report["files"].append(entry)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
