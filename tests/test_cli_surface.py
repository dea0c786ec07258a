"""The fast commands import neither torch nor spandrel; every command's help ends with an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
from spandrel_fdat.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY=" + ",".join(m for m in ("torch", "spandrel") if m in sys.modules))
"""

FAST = [
    ["--help"],
    ["--version"],
    ["autoload", "--help"],
    ["autoload", "enable", "--help"],
    ["autoload", "disable", "--help"],
    ["autoload", "status", "--help"],
    ["comfyui-node", "--help"],
    ["inspect", "--help"],
    ["convert", "--help"],
    ["upscale", "--help"],
]


def _run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("args", FAST, ids=" ".join)
def test_fast_commands_import_no_torch(args: list[str]) -> None:
    out = _run(args)
    assert out.rstrip().endswith("HEAVY="), out


def test_autoload_and_comfyui_node_import_no_torch(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for args in (
        ["autoload", "status", "--site-dir", str(site)],
        ["autoload", "enable", "--site-dir", str(site)],
        ["autoload", "status", "--site-dir", str(site)],
        ["autoload", "disable", "--site-dir", str(site)],
        ["comfyui-node", str(tmp_path / "node")],
    ):
        out = _run(args)
        assert out.rstrip().endswith("HEAVY="), (args, out)
    assert (tmp_path / "node" / "__init__.py").is_file()


@pytest.mark.parametrize("args", [a for a in FAST if a != ["--version"]], ids=" ".join)
def test_help_ends_with_an_example(args: list[str]) -> None:
    out = _run(args)
    text = out.split("Options:")[0]
    assert "Example" in text and "spandrel-fdat " in text.split("Example")[-1], out


def test_top_level_help_lists_every_command() -> None:
    out = _run(["--help"])
    commands = out.split("Commands:")[1]
    for name in ("autoload", "comfyui-node", "convert", "inspect", "upscale"):
        assert f"  {name} " in commands


LHAN_NC = Path(__file__).resolve().parent.parent / "fixtures" / "lhan_nearest_conv_x2.pth"


def test_scale_warning_names_the_remedy_of_each_interface() -> None:
    import warnings

    import spandrel

    import spandrel_fdat
    from spandrel_fdat.cli import main

    with pytest.warns(spandrel_fdat.FDATScaleWarning) as python:
        spandrel_fdat.load_model(LHAN_NC)
    assert "Choose with spandrel_fdat.load_model(path, scale=N)." in str(python[0].message)

    registry = spandrel.ArchRegistry()
    spandrel_fdat.install(registry)
    with warnings.catch_warnings(record=True) as host:
        warnings.simplefilter("always")
        spandrel.ModelLoader(registry=registry).load_from_file(LHAN_NC)
    messages = [str(w.message) for w in host if issubclass(w.category, spandrel_fdat.FDATScaleWarning)]
    assert messages == [
        "this FDAT checkpoint does not record its scale; loaded as x4. "
        "Choose with the environment variable SPANDREL_FDAT_SCALE=N, set before the host starts "
        '(in ComfyUI, also the scale of the "Load Upscale Model (FDAT)" node).'
    ]

    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["inspect", str(LHAN_NC)], standalone_mode=True)
    assert "warning: this FDAT checkpoint does not record its scale; loaded as x4. Choose with --scale N." in (
        result.output
    )
    assert "load_model" not in result.output


TFDAT_LINE = "not an FDAT checkpoint: it has flow_net.*, temporal_fuse.* (a TFDAT video checkpoint, not FDAT)"


@pytest.fixture(scope="module")
def tfdat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file
    from test_decline import LOOKALIKES, real

    path = tmp_path_factory.mktemp("tfdat") / "tfdat.safetensors"
    sd = LOOKALIKES["tfdat-flow-temporal"](real())
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "{m}"],
        ["upscale", "{img}", "-m", "{m}", "-o", "{out}/o.png"],
        ["convert", "{m}", "{out}/c.safetensors"],
    ],
    ids=lambda a: a[0],
)
def test_decline_names_the_keys_from_every_command(args: list[str], tfdat_file: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from spandrel_fdat.cli import main

    image = Path(__file__).resolve().parent.parent / "examples" / "sample.png"
    argv = [a.format(m=tfdat_file, img=image, out=tmp_path) for a in args]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2
    assert result.output.strip() == f"spandrel-fdat: error: FDAT file: {tfdat_file}: {TFDAT_LINE}"
    assert not list(tmp_path.iterdir())  # nothing written


def test_decline_names_the_keys_from_load_model(tfdat_file: Path) -> None:
    import spandrel

    from spandrel_fdat import load_model

    with pytest.raises(spandrel.UnsupportedModelError) as file_error:
        load_model(tfdat_file)
    assert str(file_error.value) == f"FDAT file: {tfdat_file}: {TFDAT_LINE}"
    from safetensors.torch import load_file

    with pytest.raises(spandrel.UnsupportedModelError) as dict_error:
        load_model(load_file(str(tfdat_file)))
    assert str(dict_error.value) == f"state dict: {TFDAT_LINE}"


def test_every_known_lookalike_is_named() -> None:
    from test_decline import LOOKALIKES, real

    from spandrel_fdat.decline import decline_reason

    for name, make in LOOKALIKES.items():
        reason = decline_reason(make(real()))
        family = name.split("-")[0]
        expected = {
            "tfdat": "(a TFDAT video checkpoint, not FDAT)",
            "fdat": "an FDAT-RD checkpoint, not FDAT)",
            "fastdat": "(a FastDAT prototype checkpoint, not FDAT)",
        }.get(family, "(keys outside the FDAT layout)")
        assert reason.endswith(expected), (name, reason)
    assert decline_reason({}) == "the state dict is empty"
    sd = real()
    del sd["conv_after.weight"]
    assert decline_reason(sd).startswith("it has no conv_after.weight")


def test_missing_onnx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from spandrel_fdat import export_onnx, load_model
    from spandrel_fdat.cli import main

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(main, ["convert", str(LHAN_NC), str(out), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip().endswith("pip install 'spandrel-fdat[onnx]'"), result.output
    assert not list(tmp_path.iterdir())
    with pytest.raises(ImportError, match=r"pip install 'spandrel-fdat\[onnx\]'"):
        export_onnx(load_model(LHAN_NC, scale=2), tmp_path / "m.onnx")
