"""Shared test helpers: small networks with realistic random weights, and the oracle."""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from spandrel_fdat import FDAT

SMALL = dict(embed_dim=24, num_groups=1, depth_per_group=1, num_heads=2, window_size=4, mid_dim=16)
"""A body small enough to build and run in milliseconds."""


def randomize_(state_dict: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Fill every float tensor with seeded values of a trained network's scale (in place).

    Weights get std 1/sqrt(fan_in) so activations stay O(1) through the body;
    LayerNorm weights sit around 1; DySample's init_pos and MetaUpsample are kept.
    (LDA amplifies last-ulp differences through offsets of up to 11 pixels, so
    its offset conv is kept near its zero initialisation.)
    """
    gen = torch.Generator().manual_seed(seed)
    for key, value in state_dict.items():
        if not value.is_floating_point() or key.endswith("init_pos"):
            continue
        noise = torch.randn(value.shape, generator=gen, dtype=torch.float32)
        if key.endswith((".n1.weight", ".n2.weight", "layer_norm.weight", "conv_offset.1.weight")):
            value.copy_(1 + 0.1 * noise)
        elif key.endswith("attn.temp"):
            value.copy_(1 + 0.2 * noise.abs())
        elif "conv_offset.3" in key:  # LDA offsets: zero-initialised upstream, small once trained
            value.copy_(0.01 * noise)
        elif value.ndim >= 2 and not key.endswith(("attn.bias", "relative_position_bias_table")):
            value.copy_(noise / math.sqrt(math.prod(value.shape[1:])))
        else:
            value.copy_(0.05 * noise)
    return state_dict


def build(seed: int = 0, **kwargs: Any) -> FDAT:
    """Our FDAT with seeded realistic weights, in eval mode."""
    model = FDAT(**kwargs)
    randomize_(model.state_dict(), seed)  # state_dict() tensors share storage with the parameters
    return model.eval()


def image(channels: int = 3, height: int = 13, width: int = 11, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, height, width, generator=gen)


@contextlib.contextmanager
def reference_dysample_on_cpu() -> Iterator[None]:
    """spandrel 0.4.2's DySample asks for pinned memory, which fails without a GPU on CUDA builds.

    Inside this context its module sees a `torch.tensor` that ignores pin_memory;
    nothing else about the oracle changes.
    """
    from spandrel.architectures.FDAT.__arch import fdat as ref_module

    real_tensor = torch.tensor

    def tensor(*args: Any, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        return real_tensor(*args, **kwargs)

    class TorchShim:
        def __getattr__(self, name: str) -> Any:
            return tensor if name == "tensor" else getattr(torch, name)

    saved = ref_module.torch
    ref_module.torch = TorchShim()  # type: ignore[assignment]
    try:
        yield
    finally:
        ref_module.torch = saved


def builtin_fdat() -> Any:
    """spandrel 0.4.2's own FDAT module (the oracle); skips the calling test on 0.4.1, which has none."""
    return pytest.importorskip("spandrel.architectures.FDAT", reason="spandrel 0.4.1 has no built-in FDAT")


def run_cli(*args: str | os.PathLike[str]) -> Result:
    """`spandrel-fdat ARGS...` in this process, stdout and stderr kept apart."""
    from spandrel_fdat import cli

    # click < 8.2 mixes stderr into the output unless told not to
    separate: dict[str, Any] = (
        {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    )
    return CliRunner(**separate).invoke(cli.main, [str(a) for a in args], prog_name="spandrel-fdat")


def assert_one_line_error(result: Result, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, one `spandrel-fdat...: error:` line holding `fragments`, no traceback."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spandrel-fdat") and ": error: " in lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
