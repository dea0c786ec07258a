"""The real chaiNNer backend with FDAT: `pip install` + `spandrel-fdat autoload enable` in its Python.

The backend starts with `backend/src/run.py PORT` on 127.0.0.1 (ready when `GET /status`
says so); chains go to `POST /run` with each node's inputs as a positional list in
`GET /nodes` order. Saved images are compared with `spandrel_fdat.load_model`'s output.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import spandrel_fdat
from spandrel_fdat.models import default_model_path
from tests.real_hosts import servers, venvs

FIXTURES = venvs.REPO / "fixtures"
TOLERANCE = 1  # 8-bit units: chaiNNer rounds when it saves
FAMILIES = [
    "uni_pixelshuffle_x4.pth",
    "uni_unshuffle_x2.safetensors",
    "lhan_transpose_conv_x3.safetensors",
    "standalone_pixelshuffle_x2.pth",
    "host_fp16_pixelshuffle_x2.safetensors",
    "uni_pa_up_x2.pth",
]


class Chainner:
    def __init__(self, server: servers.HostServer, work: Path) -> None:
        self.server = server
        self.work = work
        self.schemas = {node["schemaId"]: node for node in server.get("/nodes")["nodes"]}

    def node(self, node_id: str, schema: str, given: dict[int, Any]) -> dict[str, Any]:
        """A chain node: every input in /nodes order, the ones not given at their default."""
        inputs = [given.get(i["id"], {"type": "value", "value": i.get("def")}) for i in self.schemas[schema]["inputs"]]
        return {"id": node_id, "schemaId": schema, "inputs": inputs, "parent": None, "nodeType": "regularNode"}

    def run(self, nodes: list[dict[str, Any]]) -> tuple[int, Any]:
        body = {
            "data": nodes,
            "options": {"chaiNNer_pytorch": {"use_cpu": True, "use_fp16": False, "gpu_index": 0, "budget_limit": 0}},
            "sendBroadcastData": False,
            "useExperimentalFeatures": False,
        }
        return self.server.post("/run", body)

    def upscale(self, model: Path, image: Path, out_name: str) -> tuple[int, Any]:
        return self.run(
            [
                self.node("a", "chainner:image:load", {0: value(str(image))}),
                self.node("b", "chainner:pytorch:load_model", {0: value(str(model))}),
                self.node("c", "chainner:pytorch:upscale_image", {1: edge("a", 0), 0: edge("b", 0)}),
                self.node(
                    "d",
                    "chainner:image:save",
                    {0: edge("c", 0), 1: value(str(self.work)), 2: value("out"), 3: value(out_name)},
                ),
            ]
        )


def value(x: Any) -> dict[str, Any]:
    return {"type": "value", "value": x}


def edge(node_id: str, index: int) -> dict[str, Any]:
    return {"type": "edge", "id": node_id, "index": index}


def expected(model_file: Path | dict[str, torch.Tensor], pixels: np.ndarray) -> np.ndarray:
    """`load_model`'s output for (H, W, C) uint8 pixels, in 8-bit units (float)."""
    model = spandrel_fdat.load_model(model_file)
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return (model(x).clamp(0, 1)[0].permute(1, 2, 0) * 255).numpy()


@pytest.fixture(scope="module")
def chainner_venv() -> Iterator[tuple[Path, Path, str]]:
    """(chaiNNer source, its venv, pip's install output) with spandrel-fdat installed and autoload on."""
    source = venvs.host_source("chaiNNer", "backend/src/run.py")
    if source is None:
        pytest.skip(f"no chaiNNer source: {venvs.HOW_TO_RUN}")
    venv = venvs.host_venv("chainner", venvs.CHAINNER_PINS)
    with venvs.locked(venv):
        output = venvs.install_plugin(venv)
        subprocess.run([str(venv / "bin" / "spandrel-fdat"), "autoload", "enable"], check=True, capture_output=True)
        yield source, venv, output
        subprocess.run([str(venv / "bin" / "spandrel-fdat"), "autoload", "disable"], capture_output=True)
        venvs.uninstall_plugin(venv)


def start_chainner(source: Path, venv: Path, work: Path, **env: str) -> Chainner:
    port = servers.free_port()
    argv = [str(venvs.venv_python(venv)), "backend/src/run.py", str(port)]
    server = servers.HostServer(argv, cwd=source, env=venvs.host_env(**env), log=work / "chainner.log", port=port)
    try:
        server.wait_ready(lambda: server.get("/status").get("ready") is True, timeout=600)
        return Chainner(server, work)
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module")
def chainner(chainner_venv: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chainner]:
    source, venv, _ = chainner_venv
    host = start_chainner(source, venv, tmp_path_factory.mktemp("chainner"))
    yield host
    host.server.stop()


@pytest.fixture(scope="module")
def small_image(chainner: Chainner) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(4)
    pixels = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    path = chainner.work / "in.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_install_keeps_chainners_pins(chainner_venv: tuple[Path, Path, str]) -> None:
    _, venv, _ = chainner_venv
    subprocess.run([str(venvs.venv_python(venv)), "-m", "pip", "check"], check=True, capture_output=True)
    listed = subprocess.run(
        [str(venvs.venv_python(venv)), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.splitlines()
    for pin in ("Pillow==9.2.0", "numpy==1.24.4", "safetensors==0.4.0", "torch==2.7.0", "spandrel==0.4.1"):
        assert pin in listed


def test_start_installs_nothing(chainner: Chainner) -> None:
    assert "No dependencies to install" in chainner.server.log_tail(1_000_000)


@pytest.mark.parametrize("name", FAMILIES)
def test_load_upscale_save(chainner: Chainner, small_image: tuple[Path, np.ndarray], name: str) -> None:
    image, pixels = small_image
    stem = name.replace(".", "_")
    status, answer = chainner.upscale(FIXTURES / name, image, stem)
    assert status == 200 and answer == {"type": "success"}, answer
    saved = np.asarray(Image.open(chainner.work / "out" / f"{stem}.png").convert("RGB")).astype(float)
    want = expected(FIXTURES / name, pixels)
    assert saved.shape == want.shape
    assert np.abs(saved - want).max() <= TOLERANCE


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("uni_v2_nearest_conv_gray_x3.safetensors", "L"),
        ("uni_unshuffle_1to3_x2.pth", "L"),
        ("uni_pattern_css_rgba_x2.pth", "RGBA"),
    ],
)
def test_grey_rgba_and_one_to_three(chainner: Chainner, name: str, mode: str) -> None:
    channels = len(mode)
    rng = np.random.default_rng(5)
    pixels = (rng.random((20, 24, channels)) * 255).astype(np.uint8)
    image = chainner.work / f"in_{mode}.png"
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(image)
    stem = name.replace(".", "_")
    status, answer = chainner.upscale(FIXTURES / name, image, stem)
    assert status == 200 and answer == {"type": "success"}, answer
    saved = np.asarray(Image.open(chainner.work / "out" / f"{stem}.png")).astype(float)
    want = expected(FIXTURES / name, pixels)
    if saved.ndim == 2:
        saved = saved[..., None]
    assert saved.shape == want.shape
    assert np.abs(saved - want).max() <= TOLERANCE


@pytest.mark.parametrize("weight_format", ["pth", "safetensors"])
def test_save_model_and_reload(chainner: Chainner, small_image: tuple[Path, np.ndarray], weight_format: str) -> None:
    name = FAMILIES[0]
    status, answer = chainner.run(
        [
            chainner.node("b", "chainner:pytorch:load_model", {0: value(str(FIXTURES / name))}),
            chainner.node(
                "s",
                "chainner:pytorch:save_model",
                {
                    0: edge("b", 0),
                    1: value(str(chainner.work)),
                    2: value(f"saved_{weight_format}"),
                    3: value(weight_format),
                },
            ),
        ]
    )
    assert status == 200, answer
    saved_model = chainner.work / f"saved_{weight_format}.{weight_format}"
    status, answer = chainner.upscale(saved_model, small_image[0], f"reloaded_{weight_format}")
    assert status == 200, answer
    saved = np.asarray(Image.open(chainner.work / "out" / f"reloaded_{weight_format}.png").convert("RGB")).astype(float)
    assert np.abs(saved - expected(FIXTURES / name, small_image[1])).max() <= TOLERANCE
    reloaded = spandrel_fdat.load_model(saved_model).model.state_dict()
    original = spandrel_fdat.load_model(FIXTURES / name).model.state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in original.items())


def test_control_autoload_off(
    chainner_venv: tuple[Path, Path, str], tmp_path: Path, small_image: tuple[Path, np.ndarray]
) -> None:
    source, venv, _ = chainner_venv
    host = start_chainner(source, venv, tmp_path, SPANDREL_FDAT_AUTOLOAD="0")
    try:
        status, answer = host.upscale(FIXTURES / FAMILIES[0], small_image[0], "off")
    finally:
        host.server.stop()
    assert status != 200
    assert "unsupported" in str(answer)


def white_mean(state: Path | dict[str, torch.Tensor]) -> float:
    """The mean output for an all-white 3x3 input: chaiNNer's Interpolate Models runs the blend on one
    (3x3 for a model that needs no padding, as ours) and refuses the models when the mean is not above 0.5."""
    model = spandrel_fdat.load_model(state)
    assert (model.size_requirements.minimum, model.size_requirements.multiple_of) == (0, 1)
    with torch.no_grad():
        return float(model(torch.ones(1, model.input_channels, 3, 3)).clamp(0, 1).mean())


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Another checkpoint of the same configuration: every float tensor times (1 + 0.2 noise)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        key: value * (1 + 0.2 * torch.randn(value.shape, generator=gen)) if value.is_floating_point() else value
        for key, value in state.items()
    }


def test_interpolate_models_at_50(chainner: Chainner, small_image: tuple[Path, np.ndarray]) -> None:
    """The bundled (trained) model and a perturbed copy, blended at 50: the image and the weights of the blend."""
    image, pixels = small_image
    state_a = spandrel_fdat.load_model(default_model_path()).model.state_dict()
    state_b = perturbed(state_a, seed=7)
    model_b = chainner.work / "perturbed_x2.safetensors"
    save_file(state_b, str(model_b))
    # chaiNNer blends model.state_dict() of both descriptors: 0.5 * a + 0.5 * b, key by key
    blend = {key: 0.5 * state_a[key] + 0.5 * state_b[key] for key in state_a}
    status, answer = chainner.run(
        [
            chainner.node("a", "chainner:image:load", {0: value(str(image))}),
            chainner.node("m1", "chainner:pytorch:load_model", {0: value(str(default_model_path()))}),
            chainner.node("m2", "chainner:pytorch:load_model", {0: value(str(model_b))}),
            chainner.node(
                "i", "chainner:pytorch:interpolate_models", {0: edge("m1", 0), 1: edge("m2", 0), 2: value(50)}
            ),
            chainner.node("c", "chainner:pytorch:upscale_image", {1: edge("a", 0), 0: edge("i", 0)}),
            chainner.node(
                "d",
                "chainner:image:save",
                {0: edge("c", 0), 1: value(str(chainner.work)), 2: value("out"), 3: value("interpolated")},
            ),
            chainner.node(
                "s",
                "chainner:pytorch:save_model",
                {0: edge("i", 0), 1: value(str(chainner.work)), 2: value("interpolated"), 3: value("safetensors")},
            ),
        ]
    )
    assert status == 200 and answer == {"type": "success"}, answer
    saved = np.asarray(Image.open(chainner.work / "out" / "interpolated.png").convert("RGB")).astype(float)
    want = expected(blend, pixels)
    assert np.abs(saved - want).max() <= TOLERANCE
    # the blend is neither model: its image is far from A's and from B's
    assert np.abs(want - expected(default_model_path(), pixels)).max() > 5
    assert np.abs(want - expected(model_b, pixels)).max() > 5
    weights = spandrel_fdat.load_model(chainner.work / "interpolated.safetensors").model.state_dict()
    assert weights.keys() == state_a.keys()
    for key, blended in blend.items():
        assert torch.equal(weights[key].to(blended.dtype), blended), key


def test_interpolate_models_refuses_a_model_dark_on_white(chainner: Chainner) -> None:
    """Two copies of a random-weight fixture: chaiNNer's white-image check refuses them (its rule, not ours)."""
    fixture = FIXTURES / FAMILIES[0]
    assert white_mean(fixture) < 0.5 < white_mean(default_model_path())
    status, answer = chainner.run(
        [
            chainner.node("m1", "chainner:pytorch:load_model", {0: value(str(fixture))}),
            chainner.node("m2", "chainner:pytorch:load_model", {0: value(str(fixture))}),
            chainner.node(
                "i", "chainner:pytorch:interpolate_models", {0: edge("m1", 0), 1: edge("m2", 0), 2: value(50)}
            ),
            chainner.node(
                "s",
                "chainner:pytorch:save_model",
                {0: edge("i", 0), 1: value(str(chainner.work)), 2: value("refused"), 3: value("pth")},
            ),
        ]
    )
    assert status != 200
    assert "not compatible" in str(answer)
    assert not (chainner.work / "refused.pth").exists()


ONNX_IMAGE = (32, 48)  # (H, W): multiples of 16, so chaiNNer's ONNX node pads nothing
ONNX_CASES = [
    ("uni_pixelshuffle_x4.pth", 14),
    ("uni_pixelshuffle_x4.pth", 17),
    ("standalone_pixelshuffle_x2.safetensors", 14),
    ("uni_transpose_conv_x3.safetensors", 14),
    ("uni_transpose_conv_x3.safetensors", 17),
    ("uni_dysample_mid_ne_e_x4.pth", 14),
    ("uni_dysample_mid_ne_e_x4.pth", 17),
    ("uni_lda_mid_ne_e_x2.safetensors", 14),
]


@pytest.mark.parametrize(("name", "opset"), ONNX_CASES)
def test_convert_to_onnx_then_onnx_upscale(chainner: Chainner, name: str, opset: int) -> None:
    rng = np.random.default_rng(6)
    pixels = (rng.random((*ONNX_IMAGE, 3)) * 255).astype(np.uint8)
    image = chainner.work / "in_onnx.png"
    Image.fromarray(pixels).save(image)
    stem = f"onnx{opset}_{name.replace('.', '_')}"
    status, answer = chainner.run(
        [
            chainner.node("a", "chainner:image:load", {0: value(str(image))}),
            chainner.node("b", "chainner:pytorch:load_model", {0: value(str(FIXTURES / name))}),
            chainner.node("o", "chainner:pytorch:convert_to_onnx", {0: edge("b", 0), 2: value(opset)}),
            chainner.node("u", "chainner:onnx:upscale_image", {1: edge("a", 0), 0: edge("o", 0)}),
            chainner.node(
                "d",
                "chainner:image:save",
                {0: edge("u", 0), 1: value(str(chainner.work)), 2: value("out"), 3: value(stem)},
            ),
        ]
    )
    assert status == 200 and answer == {"type": "success"}, answer
    saved = np.asarray(Image.open(chainner.work / "out" / f"{stem}.png").convert("RGB")).astype(float)
    want = expected(FIXTURES / name, pixels)
    assert saved.shape == want.shape
    assert np.abs(saved - want).max() <= TOLERANCE
