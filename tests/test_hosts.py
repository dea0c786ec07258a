"""FDAT in the hosts, through their own loading paths: plain spandrel, autoload, ComfyUI, chaiNNer.

No host application is installed here, so each host's sequence is reproduced
step by step in tests/hosts/ (chainner_host.py, comfyui_host.py; their
docstrings name the host functions they follow). Start-up behaviour is tested
in fresh interpreters of throw-away virtual environments: a venv created from a
venv would chain to the base installation, not to the running environment, so
each throw-away venv gets a `.pth` file listing the running environment's
directories instead (plain path lines: their own `.pth` files, e.g. an editable
install's finder or a hook enabled by a developer, are not run). Tests that run
in this process restore spandrel's MAIN_REGISTRY afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from spandrel import MAIN_REGISTRY, ArchId, Architecture, ArchRegistry, ArchSupport, ImageModelDescriptor, ModelLoader

import spandrel_fdat
from spandrel_fdat import ARCH_ID, SCALE_ENV, FDATArch, FDATScaleWarning, autoload, comfyui
from tests.hosts import chainner_host, comfyui_host

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CONFIG_OF = {name: entry["config"] for entry in MANIFEST["fixtures"].values() for name in entry["files"]}
ALL_FILES = sorted(CONFIG_OF)
PACKAGE_ROOT = Path(spandrel_fdat.__file__).resolve().parent.parent
HOSTS = Path(__file__).resolve().parent / "hosts"

HAS_BUILTIN_FDAT = importlib.util.find_spec("spandrel.architectures.FDAT") is not None
HAS_EXTRA_ARCHES = importlib.util.find_spec("spandrel_extra_arches") is not None
needs_builtin = pytest.mark.skipif(not HAS_BUILTIN_FDAT, reason="spandrel < 0.4.2 has no built-in FDAT")
needs_extra_arches = pytest.mark.skipif(not HAS_EXTRA_ARCHES, reason="spandrel_extra_arches is not installed")
# spandrel_extra_arches 0.2.0 uses torch.jit.script at import, which recent torch deprecates
extra_arches_warning = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

# a mix of layouts, wrappers, formats and dtypes, all with a stored scale
VARIED = [
    "uni_pixelshuffle_x3.pth",
    "uni_dysample_mid_ne_e_x4.safetensors",
    "uni_unshuffle_1to3_x2.pth",
    "uni_v2_nearest_conv_gray_x3.safetensors",
    "lhan_transpose_conv_x2.pth",
    "standalone_transpose_conv_x4.safetensors",
    "host_fp16_pixelshuffle_x2.pth",
    "host_meta_int64_lda_mid_eq_e_x3.safetensors",
    "host_params_ema_transpose_conv_x2.pth",
    "host_module_prefix_pixelshuffle_x2.safetensors",
    "host_state_dict_dysample_mid_eq_e_x2.pth",
]


def _set(registry: ArchRegistry, source: ArchRegistry) -> None:
    # ArchRegistry is copy-on-write over these three fields (spandrel 0.4.1 and 0.4.2 alike)
    registry._architectures, registry._ordered, registry._by_id = source._architectures, source._ordered, source._by_id


@pytest.fixture
def host_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[ArchRegistry]:
    """spandrel's MAIN_REGISTRY as a host starts with it (no FDAT of ours); restored after the test."""
    monkeypatch.delenv(SCALE_ENV, raising=False)
    saved = MAIN_REGISTRY.copy()
    fresh = ArchRegistry()
    fresh.add(*[a for a in saved.architectures("insertion") if a.architecture.id != ARCH_ID])
    _set(MAIN_REGISTRY, fresh)
    try:
        yield MAIN_REGISTRY
    finally:
        _set(MAIN_REGISTRY, saved)


def read_raw(path: Path) -> dict[str, Any]:
    """The file's contents as saved, wrapper included (what a host hands to load_from_state_dict)."""
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def detection_index(registry: ArchRegistry, arch_id: str) -> int:
    return [a.architecture.id for a in registry.architectures("detection")].index(arch_id)


# --- plain spandrel --------------------------------------------------------------------------


def test_install_registers_once_and_second_install_is_harmless(host_registry: ArchRegistry) -> None:
    assert ARCH_ID not in host_registry
    added = spandrel_fdat.install()
    assert [a.architecture.id for a in added] == [ARCH_ID]
    order = host_registry.architectures("detection")
    # README: a second install() adds nothing, returns [], and leaves the registry as it was
    assert spandrel_fdat.install() == []
    assert spandrel_fdat.install(ignore_duplicates=True) == []
    assert host_registry.architectures("detection") == order
    if HAS_BUILTIN_FDAT:  # spandrel 0.4.2: ours is tried before the built-in FDAT
        assert detection_index(host_registry, ARCH_ID) < detection_index(host_registry, "FDAT")


@pytest.mark.parametrize("filename", ALL_FILES)
def test_plain_spandrel_loads_every_checkpoint_as_ours(host_registry: ArchRegistry, filename: str) -> None:
    spandrel_fdat.install()
    path = FIXTURES / filename
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FDATScaleWarning)  # the one LHAN nearest_conv checkpoint
        from_file = ModelLoader().load_from_file(path)
        from_dict = ModelLoader().load_from_state_dict(read_raw(path))
    for model in (from_file, from_dict):
        assert isinstance(model.architecture, FDATArch)
        assert model.architecture.id == ARCH_ID
        assert model.model.config == from_file.model.config
    if "scale-guessed" not in from_file.tags:
        assert from_file.scale == CONFIG_OF[filename]["scale"]


@needs_builtin
def test_plain_spandrel_without_install_is_not_ours(host_registry: ArchRegistry) -> None:
    """The control: the same file without install() goes to spandrel 0.4.2's own FDAT."""
    model = ModelLoader().load_from_file(FIXTURES / "uni_pixelshuffle_x3.pth")
    assert model.architecture.id == "FDAT"


# --- coexistence: spandrel_extra_arches, built-in FDAT, another holder of our id --------------


@needs_extra_arches
@extra_arches_warning
@pytest.mark.parametrize("fdat_first", [True, False], ids=["fdat-first", "extra-arches-first"])
def test_coexists_with_spandrel_extra_arches(host_registry: ArchRegistry, fdat_first: bool) -> None:
    from spandrel_extra_arches import EXTRA_REGISTRY

    steps = [spandrel_fdat.install, lambda: host_registry.add(*EXTRA_REGISTRY)]  # the host: no ignore_duplicates
    for step in steps if fdat_first else reversed(steps):
        step()
    ids = {a.architecture.id for a in host_registry}
    assert ARCH_ID in ids
    assert {a.architecture.id for a in EXTRA_REGISTRY} <= ids
    assert spandrel_fdat.install(ignore_duplicates=True) == []  # the autoload hook or the ComfyUI node again
    if HAS_BUILTIN_FDAT:
        assert detection_index(host_registry, ARCH_ID) < detection_index(host_registry, "FDAT")
    for filename in ("uni_pixelshuffle_x3.pth", "lhan_transpose_conv_x2.safetensors"):
        assert ModelLoader().load_from_file(FIXTURES / filename).architecture.id == ARCH_ID


def test_host_merging_our_registry_with_builtin_fdat_present(host_registry: ArchRegistry) -> None:
    """`MAIN_REGISTRY.add(*spandrel_fdat.REGISTRY)` (a host's own merge) does not collide with "FDAT"."""
    added = host_registry.add(*spandrel_fdat.REGISTRY)
    assert [a.architecture.id for a in added] == [ARCH_ID]
    assert ModelLoader().load_from_file(FIXTURES / "uni_pixelshuffle_x3.pth").architecture.id == ARCH_ID


def test_registration_never_raises_when_another_arch_holds_our_id(host_registry: ArchRegistry) -> None:
    """What the autoload hook and the ComfyUI node call: install(ignore_duplicates=True)."""
    impostor = ArchSupport.from_architecture(_Impostor())
    host_registry.add(impostor)
    assert spandrel_fdat.install(ignore_duplicates=True) == []
    assert host_registry[ARCH_ID] is impostor


class _Impostor(Architecture[torch.nn.Module]):
    """Another package's architecture that happens to use our id."""

    def __init__(self) -> None:
        super().__init__(id=ArchId(ARCH_ID), name="not ours", detect=lambda state_dict: False)

    def load(self, state_dict: Any) -> Any:
        raise NotImplementedError


# --- chaiNNer (in this process; the autoload run below does it in a fresh interpreter) --------


@pytest.fixture
def chainner_registry(host_registry: ArchRegistry) -> ArchRegistry:
    """chaiNNer after start-up: FDAT registered (autoload), then spandrel_extra_arches merged."""
    spandrel_fdat.install(ignore_duplicates=True)
    if HAS_EXTRA_ARCHES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from spandrel_extra_arches import EXTRA_REGISTRY
        host_registry.add(*EXTRA_REGISTRY)
    return host_registry


def _image(channels: int) -> torch.Tensor:
    return torch.rand(1, channels, 12, 10, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("filename", VARIED)
def test_chainner_load_model_fp16_and_upscale(chainner_registry: ArchRegistry, filename: str) -> None:
    device = torch.device("cpu")
    model = chainner_host.load_model_node(FIXTURES / filename, device=device, use_fp16=True)
    config = CONFIG_OF[filename]
    # what chaiNNer shows: the architecture's name, the scale, the tags
    assert isinstance(model, ImageModelDescriptor)
    assert (model.architecture.id, model.architecture.name) == (ARCH_ID, "FDAT")
    assert model.scale == config["scale"]
    assert f"{config['embed_dim']}dim" in model.tags
    assert model.supports_half
    assert not model.model.training
    assert all(p.dtype == torch.float16 and not p.requires_grad for p in model.model.parameters())

    image = _image(model.input_channels)
    half = chainner_host.upscale(model, image, use_fp16=True)
    s = config["scale"]
    assert half.shape == (1, model.output_channels, 12 * s, 10 * s)
    assert torch.isfinite(half).all()
    full = chainner_host.upscale(
        chainner_host.load_model_node(FIXTURES / filename, device=device, use_fp16=False), image, use_fp16=False
    )
    assert (half - full).abs().max() < 0.05  # fp16 rounding only


@pytest.mark.parametrize("filename", VARIED)
@pytest.mark.parametrize("use_fp16", [False, True], ids=["fp32", "fp16"])
def test_chainner_save_model_and_load_it_back(
    chainner_registry: ArchRegistry, filename: str, use_fp16: bool, tmp_path: Path
) -> None:
    device = torch.device("cpu")
    model = chainner_host.load_model_node(FIXTURES / filename, device=device, use_fp16=use_fp16)
    saved_state = model.model.state_dict()
    image = _image(model.input_channels)
    for weight_format in ("pth", "safetensors"):
        path = chainner_host.save_model_node(model, tmp_path, "saved", weight_format)
        again = chainner_host.load_model_node(path, device=device, use_fp16=use_fp16)
        assert again.architecture.id == ARCH_ID
        assert again.model.config == model.model.config
        state = again.model.state_dict()
        assert state.keys() == saved_state.keys()
        for key, value in saved_state.items():
            assert torch.equal(state[key], value), key
        assert torch.equal(
            chainner_host.upscale(again, image, use_fp16=use_fp16),
            chainner_host.upscale(model, image, use_fp16=use_fp16),
        )


@pytest.mark.parametrize("filename", VARIED)
def test_chainner_interpolate_models(chainner_registry: ArchRegistry, filename: str) -> None:
    device = torch.device("cpu")
    model_a = chainner_host.load_model_node(FIXTURES / filename, device=device, use_fp16=False)
    state_a = model_a.model.state_dict()
    model_b = ModelLoader(device).load_from_state_dict(chainner_host.perturbed(state_a, seed=1))
    state_b = model_b.model.state_dict()

    blend_state = chainner_host.perform_interp(state_a, state_b, 50)
    if "upsampler.MetaUpsample" in state_a:  # an integer buffer, float after the blend
        assert not state_a["upsampler.MetaUpsample"].is_floating_point()
        assert blend_state["upsampler.MetaUpsample"].dtype == torch.float32
    mean = chainner_host.check_can_interp(state_a, state_b)
    assert mean is not None and torch.isfinite(torch.tensor(mean))

    blend = chainner_host.interpolate_models_node(model_a, model_b, 50, device=device)
    assert blend.architecture.id == ARCH_ID
    assert blend.model.config == model_a.model.config
    for key, value in blend.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (state_a[key] + state_b[key]) / 2, rtol=0, atol=1e-6)
    out = chainner_host.upscale(blend, _image(blend.input_channels), use_fp16=False)
    assert torch.isfinite(out).all()


# --- ComfyUI (in this process; the fresh start-up is below) -----------------------------------


@pytest.mark.parametrize("bare_name", [False, True], ids=["module-name-from-path", "bare-folder-name"])
def test_comfyui_node_registers_fdat_and_offers_the_loader_node(
    host_registry: ArchRegistry, tmp_path: Path, bare_name: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "custom_nodes" / comfyui.NODE_FOLDER_NAME
    comfyui.write_comfyui_node(folder)
    monkeypatch.setattr(comfyui_host, "NODE_CLASS_MAPPINGS", {})
    name = os.path.basename(folder) if bare_name else str(folder).replace(".", "_x_")
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        assert comfyui_host.load_custom_node(str(folder), bare_name=bare_name)  # counted as loaded
        assert sys.modules[name].NODE_CLASS_MAPPINGS == comfyui.NODE_CLASS_MAPPINGS
    finally:
        sys.modules.pop(name, None)
    assert comfyui_host.NODE_CLASS_MAPPINGS == comfyui.NODE_CLASS_MAPPINGS
    assert ARCH_ID in host_registry
    for filename in VARIED:
        model = comfyui_host.load_upscale_model(str(FIXTURES / filename))
        assert model.architecture.id == ARCH_ID
        image = torch.rand(1, 11, 13, model.input_channels, generator=torch.Generator().manual_seed(0))
        out = comfyui_host.upscale(model, image)
        s = model.scale
        assert out.shape == (1, 11 * s, 13 * s, model.output_channels)
        assert out.min() >= 0 and out.max() <= 1


# --- fresh interpreters: throw-away environments ----------------------------------------------

_OURS = ("spandrel_fdat", "_spandrel_fdat", "spandrel-fdat", "__editable__.spandrel_fdat", "__editable___spandrel_fdat")


def _absolute_pythonpath() -> list[str]:
    return [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _without_fdat(directory: Path, farm: Path) -> Path:
    """`directory` if spandrel_fdat is not in it, else a copy made of links to everything else in it."""
    if not (directory / "spandrel_fdat").exists():
        return directory
    farm.mkdir(parents=True)
    for entry in directory.iterdir():
        if not entry.name.startswith(_OURS):
            (farm / entry.name).symlink_to(entry)
    return farm


class Env:
    """A throw-away virtual environment: its own site-packages, the running environment's packages."""

    def __init__(self, root: Path, *, with_fdat: bool = True) -> None:
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root / "venv")
        self.python = root / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        self.cwd = root
        pythonpath = _absolute_pythonpath()
        dirs = [Path(d) for d in autoload.startup_site_dirs() if Path(d).is_dir()]
        if with_fdat:
            dirs.insert(0, PACKAGE_ROOT)
        else:
            pythonpath = [p for p in pythonpath if not (Path(p) / "spandrel_fdat").exists()]
            dirs = [_without_fdat(d, root / f"farm{i}") for i, d in enumerate(dirs)]
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", autoload.ENV_SWITCH, SCALE_ENV)
        }
        self.env.update(PYTHONPATH=os.pathsep.join(pythonpath), OMP_NUM_THREADS="1", PYTHONIOENCODING="utf-8")
        # (not with -S: without the site module, sys.prefix is not the venv's)
        self.site_dir = Path(self.run("-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
        assert self.site_dir.resolve().is_relative_to((root / "venv").resolve()), self.site_dir  # never outside
        (self.site_dir / "000_running_environment.pth").write_text("".join(f"{d}\n" for d in dirs))

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.python), *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result

    def probe(self, code: str = "", env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
        """What start-up imported and whether the hook's finder is in place; then `code` (which may add keys)."""
        script = (
            "import sys\n"
            "report = {'startup': sorted(sys.modules), "
            "'finder': any(getattr(f, 'spandrel_fdat_autoload', False) for f in sys.meta_path)}\n"
            f"{code}\n"
            "import json\n"
            "print(json.dumps(report))\n"
        )
        result = self.run("-c", script, env=env)
        return json.loads(result.stdout.splitlines()[-1]), result.stderr


HEAVY = ("torch", "spandrel", "spandrel_fdat", "numpy", "safetensors")


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in HEAVY]


def test_autoload_startup_imports_only_the_hook(tmp_path: Path) -> None:
    env = Env(tmp_path)
    autoload.enable_autoload(env.site_dir)
    report, stderr = env.probe()
    assert stderr == ""
    assert autoload.HOOK_MODULE in report["startup"]
    assert report["finder"]
    assert _heavy(report["startup"]) == []
    # SPANDREL_FDAT_AUTOLOAD=0: the hook is imported but puts no finder in place
    report, stderr = env.probe(env={autoload.ENV_SWITCH: "0"})
    assert (stderr, report["finder"]) == ("", False)


def test_autoload_disabled_startup_is_silent(tmp_path: Path) -> None:
    env = Env(tmp_path)
    autoload.enable_autoload(env.site_dir)
    env.probe()  # a start-up with the hook (leaves its bytecode in __pycache__)
    assert autoload.disable_autoload(env.site_dir)
    assert sorted(p.name for p in env.site_dir.rglob("*") if "spandrel_fdat" in p.name) == []
    report, stderr = env.probe()
    assert stderr == ""
    assert autoload.HOOK_MODULE not in report["startup"]
    assert not report["finder"]


def test_autoload_with_its_hook_module_gone_startup_is_silent(tmp_path: Path) -> None:
    env = Env(tmp_path)
    pth = autoload.enable_autoload(env.site_dir)
    env.probe()
    (env.site_dir / autoload.HOOK_NAME).unlink()
    shutil.rmtree(env.site_dir / "__pycache__", ignore_errors=True)
    assert pth.exists()
    report, stderr = env.probe()
    assert stderr == ""
    assert autoload.HOOK_MODULE not in report["startup"]
    assert not report["finder"]
    assert autoload.autoload_status(env.site_dir).state == "incomplete"


def test_autoload_after_spandrel_fdat_is_uninstalled_is_silent(tmp_path: Path) -> None:
    """The hook stays behind (pip does not know its files); spandrel imports as before, nothing printed."""
    env = Env(tmp_path, with_fdat=False)
    autoload.enable_autoload(env.site_dir)
    report, stderr = env.probe(
        "import importlib.util\n"
        "report['fdat_found'] = importlib.util.find_spec('spandrel_fdat') is not None\n"
        "import spandrel\n"
        "report['registered'] = 'spandrel_fdat.FDAT' in spandrel.MAIN_REGISTRY\n"
        "report['spandrel_fdat_imported'] = 'spandrel_fdat' in sys.modules\n"
    )
    assert report["finder"]  # the hook did run
    assert report["fdat_found"] is False  # the precondition: spandrel_fdat is gone
    assert report["registered"] is False
    assert report["spandrel_fdat_imported"] is False
    assert stderr == ""


@extra_arches_warning
def test_chainner_with_autoload_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """chaiNNer's path: only `import spandrel` in the host, FDAT registered by the hook."""
    env = Env(tmp_path)
    autoload.enable_autoload(env.site_dir)

    # `spandrel-fdat autoload status` in that environment: its default site-packages is the venv's,
    # and that interpreter imports spandrel_fdat before spandrel (the hook waits for spandrel_fdat).
    status = env.run("-m", "spandrel_fdat.cli", "autoload", "status").stdout
    assert "autoload: enabled" in status
    assert f"site-packages: {env.site_dir}" in status
    assert "hook loaded in this interpreter: yes" in status
    assert "FDAT registered with spandrel in this interpreter: yes" in status

    files = ["uni_pixelshuffle_x3.safetensors", "host_meta_float32_nearest_conv_x2.pth", "lhan_transpose_conv_x2.pth"]
    result = env.run(str(HOSTS / "chainner_host.py"), *(str(FIXTURES / f) for f in files))
    assert "Traceback" not in result.stderr and "spandrel-fdat" not in result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert _heavy(report["startup_modules"]) == []
    assert autoload.HOOK_MODULE in report["startup_modules"]
    assert report["registered_on_import"] is True
    import spandrel

    assert report["spandrel"] == spandrel.__version__  # the same spandrel as this test run (0.4.1 or 0.4.2)
    assert report["extra_arches"] is HAS_EXTRA_ARCHES
    for name, entry in zip(files, report["files"], strict=True):
        scale = CONFIG_OF[name]["scale"]
        shown = {"id": ARCH_ID, "name": "FDAT", "scale": scale}
        assert {k: entry[k] for k in shown} == shown
        assert f"{CONFIG_OF[name]['embed_dim']}dim" in entry["tags"]
        assert entry["dtype"] == "torch.float16"
        assert entry["output"] == [1, 3, 12 * scale, 10 * scale] and entry["finite"]
        assert [{k: r[k] for k in shown} for r in entry["reloaded"]] == [shown, shown]
        assert {k: entry["interpolated"][k] for k in shown} == shown


@extra_arches_warning
def test_comfyui_startup_with_the_custom_node_in_a_fresh_interpreter(tmp_path: Path) -> None:
    env = Env(tmp_path)  # no autoload: the custom node alone registers FDAT
    node = comfyui.write_comfyui_node(tmp_path / "ComfyUI" / "custom_nodes" / comfyui.NODE_FOLDER_NAME).parent
    files = [
        "host_state_dict_dysample_mid_eq_e_x2.pth",
        "host_params_ema_transpose_conv_x2.pth",
        "host_module_prefix_pixelshuffle_x2.pth",
        "host_fp16_pixelshuffle_x2.safetensors",
        "standalone_pixelshuffle_x3.safetensors",
        "uni_pixelshuffle_x4.pth",
    ]
    result = env.run(str(HOSTS / "comfyui_host.py"), "--node", str(node), *(str(FIXTURES / f) for f in files))
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["extra_arches"] is HAS_EXTRA_ARCHES
    assert report["registered_before_nodes"] is False
    assert report["nodes_loaded"] == [True]
    assert report["node_class_mappings"] == ["FDATUpscaleModelLoader"]
    for name, entry in zip(files, report["files"], strict=True):
        config = CONFIG_OF[name]
        s = config["scale"]
        assert (entry["id"], entry["name"], entry["scale"]) == (ARCH_ID, "FDAT", s)
        assert entry["output"] == [1, 11 * s, 13 * s, config["num_out_ch"]] and entry["finite"]
