"""The real ComfyUI server with FDAT: the node pack cloned into custom_nodes/, and the wheel's node folder.

Each server starts with `main.py --cpu` on 127.0.0.1 at a free port, with its own base
directory (models/upscale_models, custom_nodes, input, output); prompts go to
`POST /prompt` and results are read from `GET /history/{id}` and the saved PNG files.
Every saved image is compared with `spandrel_fdat.load_model`'s output on the same input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import spandrel_fdat
from spandrel_fdat.errors import scale_warning_text
from tests.real_hosts import servers, venvs

FIXTURES = venvs.REPO / "fixtures"
TOLERANCE = 2  # in 8-bit units: ComfyUI's SaveImage truncates to uint8, we round

# one checkpoint per layout family and wrapper, both file formats, fp16-stored ones
FAMILIES = [
    "uni_pixelshuffle_x4.pth",  # uniupsample
    "uni_unshuffle_x2.safetensors",  # uniupsample with pixel-unshuffle input
    "uni_pa_up_x2.pth",
    "uni_nearest_conv_x4.safetensors",
    "uni_dysample_mid_ne_e_x4.pth",
    "host_meta_int64_lda_mid_eq_e_x3.safetensors",
    "lhan_transpose_conv_x3.safetensors",  # lhan
    "standalone_pixelshuffle_x2.pth",  # standalone
    "host_fp16_pixelshuffle_x2.pth",  # stored in float16
    "host_fp16_pixelshuffle_x2.safetensors",
    "host_module_prefix_pixelshuffle_x2.pth",  # "module." prefix
    "host_params_ema_transpose_conv_x2.pth",  # params_ema wrapper
    "host_state_dict_dysample_mid_eq_e_x2.safetensors",  # state_dict wrapper
]
# plain ComfyUI (spandrel 0.4.2's FDAT) cannot load these: the node pack's FDAT runs them above
# (measured: spandrel 0.4.2 with torch 2.14.1 on the CPU; the other six load with its FDAT)
PLAIN_COMFYUI_FAILS = {
    "host_fp16_pixelshuffle_x2.pth",
    "host_fp16_pixelshuffle_x2.safetensors",
    "host_state_dict_dysample_mid_eq_e_x2.safetensors",
    "lhan_transpose_conv_x3.safetensors",
    "standalone_pixelshuffle_x2.pth",
    "uni_dysample_mid_ne_e_x4.pth",
    "uni_pa_up_x2.pth",
}
LARGE = "uni_conv_x1.safetensors"  # a 600x560 image: more than one 512-pixel tile
LHAN_NEAREST = "lhan_nearest_conv_x2.pth"  # does not record its scale: x2 only through the loader node


def picture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth RGB picture with detail (uint8, H x W x 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(9 * x * y)], axis=-1)
    noisy = 0.5 + 0.35 * base + 0.1 * rng.standard_normal((height, width, 3))
    return np.clip(noisy * 255 + 0.5, 0, 255).astype(np.uint8)


def expected(model_file: Path, pixels: np.ndarray, scale: int | None = None) -> np.ndarray:
    """`load_model`'s output on the picture, in 8-bit units (float, H x W x 3)."""
    model = spandrel_fdat.load_model(model_file, scale=scale)
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = model(x).clamp(0, 1)
    return (y[0].permute(1, 2, 0) * 255).numpy()


class Comfy:
    """A running ComfyUI server and its base directory."""

    def __init__(self, server: servers.HostServer, base: Path) -> None:
        self.server = server
        self.base = base

    def run(self, nodes: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Queue a prompt; its history entry once it has finished (or the /prompt error)."""
        status, answer = self.server.post("/prompt", {"prompt": nodes, "client_id": uuid.uuid4().hex})
        if status != 200:
            return {"rejected": answer}
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.server.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return dict(entry)
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish:\n{self.server.log_tail()}")

    def upscale(self, loader: dict[str, Any], image_name: str) -> dict[str, Any]:
        """LoadImage -> (loader) -> ImageUpscaleWithModel -> SaveImage."""
        prefix = uuid.uuid4().hex
        return self.run(
            {
                "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
                "2": loader,
                "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
            }
        )

    def saved(self, entry: dict[str, Any]) -> np.ndarray:
        assert entry.get("status", {}).get("status_str") == "success", json.dumps(entry)[-3000:]
        (image,) = entry["outputs"]["4"]["images"]
        return np.asarray(Image.open(self.base / "output" / image["subfolder"] / image["filename"]).convert("RGB"))


def stock_loader(name: str) -> dict[str, Any]:
    return {"class_type": "UpscaleModelLoader", "inputs": {"model_name": name}}


def fdat_loader(name: str, scale: str = "auto") -> dict[str, Any]:
    return {"class_type": "FDATUpscaleModelLoader", "inputs": {"model_name": name, "scale": scale}}


def error_of(entry: dict[str, Any]) -> str:
    """The execution_error message of a failed prompt."""
    assert entry.get("status", {}).get("status_str") == "error", json.dumps(entry)[-3000:]
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return str(data["exception_message"])
    raise AssertionError(json.dumps(entry)[-3000:])


@pytest.fixture(scope="module")
def comfyui_venv() -> Iterator[tuple[Path, Path]]:
    """(ComfyUI source, its venv), the venv locked for this module; spandrel_fdat not installed in it."""
    source = venvs.host_source("ComfyUI", "main.py")
    if source is None:
        pytest.skip(f"no ComfyUI source: {venvs.HOW_TO_RUN}")
    venv = venvs.host_venv("comfyui", venvs.comfyui_pins(source), venvs.COMFYUI_NO_DEPS)
    with venvs.locked(venv):
        venvs.uninstall_plugin(venv)
        # what ComfyUI-Manager and `comfy node install` do with a node pack's requirements.txt
        venvs.pip(venv, "install", "-q", "-r", str(venvs.REPO / "requirements.txt"))
        yield source, venv
        venvs.uninstall_plugin(venv)


def start_comfyui(source: Path, venv: Path, base: Path, models: list[str], **env: str) -> Comfy:
    for sub in ("custom_nodes", "input", "output", "models/upscale_models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for name in models:
        shutil.copy(FIXTURES / name, base / "models" / "upscale_models" / name)
    port = servers.free_port()
    argv = [str(venvs.venv_python(venv)), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
    argv += ["--base-directory", str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
    server = servers.HostServer(argv, cwd=source, env=venvs.host_env(**env), log=base / "comfyui.log", port=port)
    try:
        server.wait_ready(lambda: server.get("/system_stats") is not None, timeout=300)
    except BaseException:
        server.stop()
        raise
    return Comfy(server, base)


@pytest.fixture(scope="module")
def comfy(comfyui_venv: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Comfy]:
    """ComfyUI with this repository cloned into custom_nodes/ (the committed tree, as users get it)."""
    source, venv = comfyui_venv
    base = tmp_path_factory.mktemp("comfyui")
    lookalike = torch.load(FIXTURES / "uni_pixelshuffle_x4.pth", weights_only=True)
    lookalike["extra_unknown_block.weight"] = torch.zeros(4)  # FDAT's keys plus one FDAT has not: not FDAT
    (base / "models" / "upscale_models").mkdir(parents=True)
    torch.save(lookalike, base / "models" / "upscale_models" / "lookalike.pth")
    data = (FIXTURES / "uni_pixelshuffle_x4.pth").read_bytes()
    (base / "models" / "upscale_models" / "truncated.pth").write_bytes(data[: len(data) // 2])
    (base / "custom_nodes").mkdir()
    subprocess.run(
        ["git", "clone", "-q", str(venvs.REPO), str(base / "custom_nodes" / "spandrel-fdat")],
        check=True,
        capture_output=True,
    )
    comfy = start_comfyui(source, venv, base, [*FAMILIES, LARGE, LHAN_NEAREST])
    yield comfy
    comfy.server.stop()


@pytest.fixture(scope="module")
def small_image(comfy: Comfy) -> np.ndarray:
    pixels = picture(20, 24, seed=1)
    Image.fromarray(pixels).save(comfy.base / "input" / "small.png")
    return pixels


def test_clone_registers_the_node_pack(comfy: Comfy) -> None:
    info = comfy.server.get("/object_info/FDATUpscaleModelLoader")["FDATUpscaleModelLoader"]
    assert info["display_name"] == "Load Upscale Model (FDAT)"
    assert info["output"] == ["UPSCALE_MODEL"]
    assert info["input"]["required"]["scale"][0] == ["auto", "1", "2", "3", "4"]
    assert "spandrel-fdat" in comfy.server.log_tail(100_000)


def test_comfyui_reads_the_registry_metadata(comfy: Comfy, comfyui_venv: tuple[Path, Path]) -> None:
    """pyproject.toml's [project] and [tool.comfy], as ComfyUI's own parser (comfy_config) reads the clone."""
    source, venv = comfyui_venv
    assert "Unable to parse pyproject.toml" not in comfy.server.log_tail(10_000_000)
    script = (
        "import json, sys; from comfy_config import config_parser; "
        "c = config_parser.extract_node_configuration(sys.argv[1]); print(json.dumps(c.model_dump()))"
    )
    clone = comfy.base / "custom_nodes" / "spandrel-fdat"
    result = subprocess.run(
        [str(venvs.venv_python(venv)), "-c", script, str(clone)], cwd=source, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout)
    assert parsed["project"]["name"] == "spandrel-fdat"
    assert parsed["project"]["version"] == spandrel_fdat.__version__
    assert parsed["project"]["requires_python"] == ">=3.10"
    assert parsed["tool_comfy"]["publisher_id"] == "spandrel-fdat"
    assert parsed["tool_comfy"]["display_name"] == "FDAT upscale models (spandrel-fdat)"


@pytest.mark.parametrize("name", FAMILIES)
def test_stock_nodes_upscale_every_family(comfy: Comfy, small_image: np.ndarray, name: str) -> None:
    saved = comfy.saved(comfy.upscale(stock_loader(name), "small.png"))
    want = expected(FIXTURES / name, small_image)
    assert saved.shape == want.shape
    assert np.abs(saved - want).max() <= TOLERANCE


def test_larger_than_one_tile_matches_comfyuis_tiling(comfy: Comfy, comfyui_venv: tuple[Path, Path]) -> None:
    source, venv = comfyui_venv
    pixels = picture(560, 600, seed=2)
    Image.fromarray(pixels).save(comfy.base / "input" / "large.png")
    saved = comfy.saved(comfy.upscale(stock_loader(LARGE), "large.png"))
    # ComfyUI's own tiled_scale (512 tiles, 32 overlap) run on our model in ComfyUI's Python
    script = f"""
import sys
sys.argv = sys.argv[:1]
sys.path[:0] = [{str(source)!r}, {str(venvs.REPO)!r}]
import numpy as np, torch
from PIL import Image
import comfy.utils
import spandrel_fdat
model = spandrel_fdat.load_model({str(FIXTURES / LARGE)!r})
x = torch.from_numpy(np.asarray(Image.open({str(comfy.base / "input" / "large.png")!r}).convert("RGB"))).float() / 255
x = x.permute(2, 0, 1)[None]
with torch.no_grad():
    y = comfy.utils.tiled_scale(x, lambda a: model(a.float()), tile_x=512, tile_y=512, overlap=32, upscale_amount=model.scale)
np.save({str(comfy.base / "tiled.npy")!r}, (y.clamp(0, 1)[0].permute(1, 2, 0) * 255).numpy())
"""
    subprocess.run([str(venvs.venv_python(venv)), "-c", script], check=True, cwd=comfy.base, env=venvs.host_env())
    tiled = np.load(comfy.base / "tiled.npy")
    assert saved.shape == tiled.shape == (560, 600, 3)
    assert np.abs(saved - tiled).max() <= TOLERANCE


@pytest.mark.parametrize("name", ["lookalike.pth", "truncated.pth"])
def test_bad_files_are_execution_errors_and_the_server_goes_on(
    comfy: Comfy, small_image: np.ndarray, name: str
) -> None:
    error_of(comfy.upscale(stock_loader(name), "small.png"))
    message = error_of(comfy.upscale(fdat_loader(name), "small.png"))
    with pytest.raises(Exception) as ours:
        spandrel_fdat.load_model(comfy.base / "models" / "upscale_models" / name)
    assert message.strip() == str(ours.value)  # the loader node's words are load_model's
    saved = comfy.saved(comfy.upscale(stock_loader(FAMILIES[0]), "small.png"))  # the next prompt runs
    assert saved.shape == (80, 96, 3)


def test_loader_node_takes_the_true_scale(comfy: Comfy, small_image: np.ndarray) -> None:
    # The checkpoint does not record its scale: "auto" guesses x4, the node's 2 gives its true x2.
    guessed = comfy.saved(comfy.upscale(fdat_loader(LHAN_NEAREST, "auto"), "small.png"))
    assert guessed.shape == (80, 96, 3)
    assert comfy.saved(comfy.upscale(stock_loader(LHAN_NEAREST), "small.png")).shape == (80, 96, 3)
    # both loader nodes warn in the same words, naming the environment variable and the FDAT node
    warning = scale_warning_text(4, "host")
    assert 'the scale of the "Load Upscale Model (FDAT)" node' in warning
    warned_from = [line.split(":")[0] for line in comfy.server.log_tail(10_000_000).splitlines() if warning in line]
    assert sorted(Path(f).name for f in warned_from) == ["comfyui.py", "loader.py"], warned_from  # ours, spandrel's
    true = comfy.saved(comfy.upscale(fdat_loader(LHAN_NEAREST, "2"), "small.png"))
    want = expected(FIXTURES / LHAN_NEAREST, small_image, scale=2)
    assert true.shape == want.shape == (40, 48, 3)
    assert np.abs(true - want).max() <= TOLERANCE
    # a checkpoint that records its scale keeps it whatever the choice
    kept = comfy.saved(comfy.upscale(fdat_loader(FAMILIES[0], "2"), "small.png"))
    assert np.abs(kept - expected(FIXTURES / FAMILIES[0], small_image)).max() <= TOLERANCE


def test_wheel_route_comfyui_node_folder(comfyui_venv: tuple[Path, Path], tmp_path: Path) -> None:
    """`pip install spandrel-fdat` into ComfyUI's Python, then `spandrel-fdat comfyui-node custom_nodes/spandrel-fdat`."""
    source, venv = comfyui_venv
    venvs.install_plugin(venv)
    cli = venv / "bin" / "spandrel-fdat"
    subprocess.run([str(cli), "comfyui-node", str(tmp_path / "custom_nodes" / "spandrel-fdat")], check=True)
    name = "lhan_transpose_conv_x3.safetensors"
    # SPANDREL_FDAT_SCALE=2 set before the start: both loader nodes' "auto" take it (a recorded scale still wins)
    comfy = start_comfyui(source, venv, tmp_path, [name, LHAN_NEAREST], SPANDREL_FDAT_SCALE="2")
    try:
        pixels = picture(20, 24, seed=3)
        Image.fromarray(pixels).save(tmp_path / "input" / "small.png")
        saved = comfy.saved(comfy.upscale(stock_loader(name), "small.png"))
        assert np.abs(saved - expected(FIXTURES / name, pixels)).max() <= TOLERANCE
        want = expected(FIXTURES / LHAN_NEAREST, pixels, scale=2)
        for loader in (fdat_loader(LHAN_NEAREST, "auto"), stock_loader(LHAN_NEAREST), fdat_loader(LHAN_NEAREST, "2")):
            true = comfy.saved(comfy.upscale(loader, "small.png"))
            assert true.shape == want.shape == (40, 48, 3)
            assert np.abs(true - want).max() <= TOLERANCE
    finally:
        comfy.server.stop()
        venvs.uninstall_plugin(venv)


def test_control_plain_comfyui_declines_them(
    comfyui_venv: tuple[Path, Path], tmp_path: Path, small_image: np.ndarray
) -> None:
    """The same server without the node pack: spandrel 0.4.2's own FDAT loads only its own layout."""
    source, venv = comfyui_venv
    comfy = start_comfyui(source, venv, tmp_path, FAMILIES)
    try:
        Image.fromarray(small_image).save(tmp_path / "input" / "small.png")
        failed = {
            name
            for name in FAMILIES
            if comfy.upscale(stock_loader(name), "small.png")["status"]["status_str"] == "error"
        }
    finally:
        comfy.server.stop()
    assert failed >= PLAIN_COMFYUI_FAILS, sorted(failed)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "real_hosts"]))
