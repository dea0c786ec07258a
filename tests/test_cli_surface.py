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
        "Choose with the environment variable SPANDREL_FDAT_SCALE=N, set before the host starts."
    ]

    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["inspect", str(LHAN_NC)], standalone_mode=True)
    assert "warning: this FDAT checkpoint does not record its scale; loaded as x4. Choose with --scale N." in (
        result.output
    )
    assert "load_model" not in result.output
