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
