"""Load every bundled FDAT checkpoint with spandrel_fdat and with spandrel's own loader.

    python examples/compare_with_builtin.py [fixtures/]

For each file: what spandrel_fdat infers (layout, upsampler, scale, channels,
tags) and whether it ran, next to what plain spandrel does with the same file
(its built-in FDAT where it has one: spandrel 0.4.2; none in 0.4.1).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import spandrel
import torch

import spandrel_fdat


def plain_spandrel(path: Path, x: torch.Tensor) -> str:
    """What spandrel without our plugin does with the file."""
    try:
        model = spandrel.ModelLoader().load_from_file(path)
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0]
        return f"fails: {type(err).__name__}: {first_line[:60]}"
    try:
        with torch.inference_mode():
            y = model(x[:, : model.input_channels])
    except Exception as err:
        return f"{model.architecture.name} x{model.scale}, run fails: {type(err).__name__}: {str(err)[:50]}"
    return f"{model.architecture.name} x{model.scale} ok {tuple(y.shape[-2:])}"


def ours(path: Path, x: torch.Tensor) -> str:
    registry = spandrel.ArchRegistry()
    spandrel_fdat.install(registry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", spandrel_fdat.FDATScaleWarning)
        model = spandrel.ModelLoader(registry=registry).load_from_file(path)
    c = model.model.config
    with torch.inference_mode():
        y = model(x[:, : model.input_channels])
    return (
        f"{c.layout:<11} {c.upsampler_type:<18} x{model.scale} {model.input_channels}->{model.output_channels} "
        f"{','.join(model.tags):<44} ok {tuple(y.shape[-2:])}"
    )


def main(folder: Path) -> int:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".pth", ".safetensors"))
    if not files:
        print(f"no .pth or .safetensors files in {folder}", file=sys.stderr)
        return 2
    x = torch.rand(1, 4, 13, 11)
    print(f"spandrel {spandrel.__version__}, spandrel_fdat {spandrel_fdat.__version__}, {len(files)} files\n")
    plain_ok = 0
    for path in files:
        plain = plain_spandrel(path, x)
        plain_ok += " ok " in plain
        print(f"{path.name}\n  spandrel_fdat : {ours(path, x)}\n  spandrel alone: {plain}")
    print(f"\nspandrel_fdat loaded and ran {len(files)}/{len(files)}; spandrel alone {plain_ok}/{len(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fixtures"))
