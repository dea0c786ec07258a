"""Property tests over random valid configurations of every layout.

One strategy draws an FDAT configuration (layout, an upsampler that layout has, a
scale it can do, a small body with arbitrary block patterns, FFN ratios and AIM
ratios). The properties:

- a network built from it, saved (.pth or .safetensors) and loaded back through
  spandrel's ModelLoader, is the same network: same inferred configuration, same
  output, output of shape (1, out, h*scale, w*scale);
- inference is never silently wrong: where the shapes also fit another network,
  `Inference.scale_guessed` says so, and the true scale as a hint picks the right one;
- `expected_shapes(config)` lists exactly the state dict the network has.

Checkpoints that cannot tell their scale (LHAN nearest_conv, unshuffle with
in != out where both PixelUnshuffle readings fit) are loaded with
`spandrel_fdat.load_model(path, scale=...)`.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import spandrel
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import spandrel_fdat
from spandrel_fdat import FDAT, FDATConfig, expected_shapes, infer_config
from spandrel_fdat.config import LAYOUT_UPSAMPLERS, LAYOUTS, META_VERSION_MODES
from tests.helpers import SMALL, build, image

PROPERTY_SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# Every (layout, upsampler) pair, equally likely: UniUpsample's eight modes get their share.
LAYOUT_MODES = [(layout, up) for layout in LAYOUTS for up in LAYOUT_UPSAMPLERS[layout]]


def _is_pow2(n: int) -> bool:
    return n & (n - 1) == 0


def _scales(layout: str, up: str) -> st.SearchStrategy[int]:
    """Scales the layout's upsampler can be built for (so that most draws are valid)."""
    if layout == "uniupsample":
        if up in ("pixelshuffle", "nearest+conv", "pa_up"):
            return st.sampled_from([1, 2, 3, 4, 8])
        if up == "transpose+conv":
            return st.sampled_from([1, 2, 3, 4])
        return st.integers(1, 8)  # conv (always x1 in effect), pixelshuffledirect, dysample, lda
    if up == "transpose+conv":
        return st.sampled_from([2, 3, 4] if layout == "lhan" else [4])
    return st.integers(1, 8)


@st.composite
def fdat_kwargs(
    draw: st.DrawFn, modes: list[tuple[str, str]] = LAYOUT_MODES, any_channels: bool = False
) -> dict[str, Any]:
    """Keyword arguments of our FDAT for a random, valid configuration of any layout.

    `modes`: the (layout, upsampler_type) pairs to draw from (default: all of them).
    `any_channels`: also draw in != out where the standalone layout cannot tell out from the scale.
    """
    layout, up = draw(st.sampled_from(modes))
    scale = draw(_scales(layout, up))
    num_heads = draw(st.integers(1, 4))
    embed_dim = num_heads * draw(st.integers(math.ceil(8 / num_heads), 40 // num_heads))
    if up == "lda":
        mid_dim = 8 * draw(st.integers(1, 6))
    elif up == "dysample":
        mid_dim = 4 * draw(st.integers(2, 12))
    else:
        mid_dim = draw(st.integers(1, 48))
    num_in_ch = draw(st.integers(1, 4))
    num_out_ch = draw(st.integers(1, 4))
    if layout == "standalone" and up == "pixelshuffle" and not _is_pow2(scale) and not any_channels:
        # conv E -> out*s*s then PixelShuffle(s): out and s are told apart only through out == in
        num_out_ch = num_in_ch
    kwargs: dict[str, Any] = dict(
        layout=layout,
        upsampler_type=up,
        scale=scale,
        num_in_ch=num_in_ch,
        num_out_ch=num_out_ch,
        embed_dim=embed_dim,
        num_heads=num_heads,
        num_groups=draw(st.integers(1, 2)),
        depth_per_group=draw(st.integers(1, 2)),
        group_block_pattern=draw(st.lists(st.sampled_from(["spatial", "channel"]), min_size=1, max_size=3)),
        window_size=draw(st.integers(1, 6)),
        ffn_expansion_ratio=draw(st.floats(0.5, 3.0, allow_nan=False, allow_infinity=False)),
        aim_reduction_ratio=draw(st.integers(1, embed_dim)),
        mid_dim=mid_dim,
    )
    if layout == "uniupsample":
        kwargs["meta_version"] = draw(st.sampled_from([2, 3])) if up in META_VERSION_MODES[2] else 3
        if up != "conv" and scale < 3:
            kwargs["unshuffle_mod"] = draw(st.booleans())
    try:
        FDATConfig(**{**kwargs, "group_block_pattern": tuple(kwargs["group_block_pattern"])})
    except ValueError:
        assume(False)
    return kwargs


def _unshuffle_ambiguous(config: FDATConfig) -> bool:
    """conv_first.1 takes in*u*u channels: u = 2 (x2) and u = 4 (x1) both give 1 to 4 image channels.

    The reading with in == out is taken when there is one (documented); this is True where the
    checkpoint's own reading is not that one, so only its scale tells.
    """
    first_in = config.num_in_ch * config.unshuffle_factor**2
    return config.unshuffle_mod and first_in == 16 and config.num_in_ch != config.num_out_ch


def _standalone_ambiguous(config: FDATConfig) -> bool:
    """A standalone PixelShuffle(s) conv has out*s*s rows: more than one (out, s) reading fits."""
    s = config.scale
    if config.layout != "standalone" or config.upsampler_type != "pixelshuffle" or s & (s - 1) == 0:
        return False
    rows = config.num_out_ch * s * s
    readings = [
        o for o in range(1, 5) if rows % o == 0 and (r := math.isqrt(rows // o)) ** 2 * o == rows and r & (r - 1)
    ]
    return len(readings) > 1


def _scale_not_stored(config: FDATConfig) -> bool:
    lhan_nearest = config.layout == "lhan" and config.upsampler_type == "nearest+conv"
    return lhan_nearest or _standalone_ambiguous(config)


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    spandrel_fdat.install()


ODD_SIZES = st.tuples(st.integers(0, 4), st.integers(0, 4)).map(lambda hw: (2 * hw[0] + 1, 2 * hw[1] + 1))


# Each (layout, upsampler) pair gets its own examples, so none goes untested whatever the draws.
@pytest.mark.parametrize("mode", LAYOUT_MODES, ids=lambda m: f"{m[0]}-{m[1]}")
@settings(max_examples=25, **PROPERTY_SETTINGS)
@given(data=st.data(), seed=st.integers(0, 2**16), safetensors=st.booleans(), size=ODD_SIZES)
def test_save_and_load_gives_the_same_network(
    mode: tuple[str, str], data: st.DataObject, seed: int, safetensors: bool, size: tuple[int, int]
) -> None:
    kwargs = data.draw(fdat_kwargs([mode]), label="kwargs")
    model = build(seed, **kwargs)
    config = model.config
    state_dict = model.state_dict()
    needs_scale = _scale_not_stored(config) or _unshuffle_ambiguous(config)
    event(f"{config.layout} {config.upsampler_type}{' unshuffle' if config.unshuffle_mod else ''}")
    event(f"scale x{config.scale}")
    if needs_scale:
        event("scale passed to load_model")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("model.safetensors" if safetensors else "model.pth")
        if safetensors:
            save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
        else:
            torch.save(state_dict, path)
        if needs_scale:
            loaded = spandrel_fdat.load_model(path, scale=config.scale)
        else:
            loaded = spandrel.ModelLoader().load_from_file(path)

    if _scale_not_stored(config):
        inference = infer_config(state_dict)
        assert inference.scale_guessed
        if config.layout == "lhan":
            assert inference.config.scale == 4  # the default when nothing says otherwise
    inference = infer_config(state_dict, scale=config.scale if needs_scale else None)
    assert inference.config == config
    assert not inference.scale_guessed
    if config.layout == "uniupsample":
        assert inference.meta_agrees is True

    assert loaded.architecture.id == spandrel_fdat.ARCH_ID
    assert isinstance(loaded.model, FDAT)
    assert loaded.model.config == config
    assert loaded.scale == config.scale
    assert (loaded.input_channels, loaded.output_channels) == (config.num_in_ch, config.num_out_ch)

    h, w = size
    x = image(config.num_in_ch, h, w, seed=seed)
    with torch.inference_mode():
        expected = model(x)
        out = loaded.model(x)
    assert out.shape == (1, config.num_out_ch, h * config.scale, w * config.scale)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)

    # what the loaded model saves is the same checkpoint again
    saved = loaded.model.state_dict()
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in state_dict.items()}
    assert infer_config(saved, scale=config.scale if needs_scale else None).config == config


# Checkpoints whose shapes fit two networks (found by the property below; kept as explicit examples).
AMBIGUOUS = [
    # PixelUnshuffle(4) of 1 channel or PixelUnshuffle(2) of 4: conv_first.1 takes 16 channels either way
    dict(upsampler_type="pixelshuffle", unshuffle_mod=True, scale=1, num_in_ch=1, num_out_ch=4),
    dict(upsampler_type="pixelshuffle", unshuffle_mod=True, scale=2, num_in_ch=4, num_out_ch=1),
    # standalone conv E -> out*s*s: 36 rows are 4 * 3 * 3 or 1 * 6 * 6
    dict(layout="standalone", upsampler_type="pixelshuffle", scale=3, num_in_ch=1, num_out_ch=4),
]


@settings(max_examples=300, **PROPERTY_SETTINGS)
@given(kwargs=fdat_kwargs(any_channels=True))
@example(kwargs=dict(AMBIGUOUS[0], **SMALL))
@example(kwargs=dict(AMBIGUOUS[1], **SMALL))
@example(kwargs=dict(AMBIGUOUS[2], **SMALL))
def test_inference_is_right_or_says_it_guessed(kwargs: dict[str, Any]) -> None:
    """Never a silently wrong network: where the shapes fit another one, `scale_guessed` says so,
    and the true scale as a hint picks the right one. The one documented exception: of two
    unshuffle readings, the one with in == out is taken without a warning."""
    model = FDAT(**kwargs)  # shapes only: the weights do not matter here
    config = model.config
    state_dict = model.state_dict()
    inference = infer_config(state_dict)
    got = inference.config
    documented_default = _unshuffle_ambiguous(config) and got.num_in_ch == got.num_out_ch
    if not inference.scale_guessed and not documented_default:
        assert got == config
    hinted = infer_config(state_dict, scale=config.scale)
    assert hinted.config == config
    assert not hinted.scale_guessed


@settings(max_examples=500, **PROPERTY_SETTINGS)
@given(kwargs=fdat_kwargs())
def test_expected_shapes_are_the_state_dict(kwargs: dict[str, Any]) -> None:
    config = FDATConfig(**{**kwargs, "group_block_pattern": tuple(kwargs["group_block_pattern"])})
    model = FDAT.from_config(config)
    assert model.config == config
    assert expected_shapes(config) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
