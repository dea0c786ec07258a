"""The autoload files, the ComfyUI node folder and the `spandrel-fdat` command line, in this process.

Everything is written into temporary directories (`--site-dir`); the running
environment's site-packages is never touched. Start-up behaviour in fresh
interpreters is tested in tests/test_hosts.py.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from pathlib import Path

import click
import pytest

import spandrel_fdat
from spandrel_fdat import autoload, cli, comfyui
from spandrel_fdat.autoload import HOOK_MODULE, HOOK_NAME, PTH_NAME, AutoloadError
from tests.helpers import assert_one_line_error
from tests.helpers import run_cli as run

# --- the files ----------------------------------------------------------------------------------


def test_pth_file_runs_one_guarded_import_line() -> None:
    lines = [line for line in autoload.pth_source().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1 and lines[0].startswith("import ")  # site executes only lines starting with "import"
    assert f"find_spec({HOOK_MODULE!r}) is not None and __import__({HOOK_MODULE!r})" in lines[0]
    # where the hook module cannot be found the line does nothing, without an error
    namespace: dict[str, object] = {}
    exec(lines[0], namespace)
    assert HOOK_MODULE not in __import__("sys").modules


def test_hook_imports_only_the_standard_library_at_start_up() -> None:
    tree = ast.parse(autoload.hook_source())
    top_level: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    assert top_level <= {"__future__", "os", "sys", "typing"}
    deferred = {
        alias.name
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert deferred == {"importlib.util", "spandrel_fdat", "warnings"}  # only once spandrel is being imported
    assert autoload.hook_source().startswith('"""spandrel-fdat autoload hook')


def test_default_site_dir_is_this_environments_site_packages() -> None:
    assert autoload.default_site_dir() == Path(sysconfig.get_path("purelib"))
    assert autoload.autoload_status().site_dir == autoload.default_site_dir()  # read only


def test_enable_writes_both_files_and_is_idempotent(tmp_path: Path) -> None:
    site_dir = tmp_path / "site-packages"
    assert autoload.autoload_status(site_dir).state == "disabled"
    pth = autoload.enable_autoload(site_dir)
    assert pth == site_dir / PTH_NAME
    hook = site_dir / HOOK_NAME
    assert pth.read_text() == autoload.pth_source()
    assert hook.read_text() == autoload.hook_source()
    stamps = {p: os.stat(p).st_mtime_ns for p in (pth, hook)}

    assert autoload.enable_autoload(site_dir) == pth
    assert {p: os.stat(p).st_mtime_ns for p in (pth, hook)} == stamps  # nothing rewritten
    assert sorted(p.name for p in site_dir.iterdir()) == sorted([PTH_NAME, HOOK_NAME])
    status = autoload.autoload_status(site_dir)
    assert (status.state, status.enabled, status.hook_current) == ("enabled", True, True)
    assert not status.read_at_startup  # a temporary directory is no site directory of this Python


def test_enable_refreshes_a_hook_of_another_version(tmp_path: Path) -> None:
    autoload.enable_autoload(tmp_path)
    hook = tmp_path / HOOK_NAME
    hook.write_text(autoload.hook_source() + "\n# an older release\n")
    assert autoload.autoload_status(tmp_path).state == "outdated"
    assert autoload.autoload_status(tmp_path).enabled
    autoload.enable_autoload(tmp_path)
    assert hook.read_text() == autoload.hook_source()
    assert autoload.autoload_status(tmp_path).state == "enabled"


def test_enable_repairs_and_disable_cleans_up_a_half_removed_hook(tmp_path: Path) -> None:
    autoload.enable_autoload(tmp_path)
    (tmp_path / HOOK_NAME).unlink()
    assert autoload.autoload_status(tmp_path).state == "incomplete"
    autoload.enable_autoload(tmp_path)
    assert autoload.autoload_status(tmp_path).state == "enabled"
    (tmp_path / HOOK_NAME).unlink()
    assert autoload.disable_autoload(tmp_path) is True
    assert list(tmp_path.iterdir()) == []


def test_disable_removes_the_files_and_the_hooks_bytecode(tmp_path: Path) -> None:
    assert autoload.disable_autoload(tmp_path) is False  # nothing to do
    autoload.enable_autoload(tmp_path)
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / f"{HOOK_MODULE}.cpython-311.pyc").write_bytes(b"")
    (cache / "other.cpython-311.pyc").write_bytes(b"")
    assert autoload.disable_autoload(tmp_path) is True
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["__pycache__", "other.cpython-311.pyc"]
    assert autoload.autoload_status(tmp_path).state == "disabled"
    assert autoload.disable_autoload(tmp_path) is False


@pytest.mark.parametrize("name", [PTH_NAME, HOOK_NAME])
def test_files_not_written_by_us_are_never_touched(tmp_path: Path, name: str) -> None:
    foreign = tmp_path / name
    foreign.write_text("import something_else\n")
    status = autoload.autoload_status(tmp_path)
    assert status.state == "conflict" and status.foreign == (foreign,)
    with pytest.raises(AutoloadError, match="not written by spandrel-fdat"):
        autoload.enable_autoload(tmp_path)
    with pytest.raises(AutoloadError, match="not written by spandrel-fdat"):
        autoload.disable_autoload(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert foreign.read_text() == "import something_else\n"


# --- the ComfyUI node folder --------------------------------------------------------------------


def test_comfyui_node_source_offers_the_fdat_loader_node() -> None:
    source = comfyui.node_source()
    tree = ast.parse(source)
    imported = {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "spandrel_fdat.comfyui"
        for alias in node.names
    }
    assert imported == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"}
    assert comfyui.NODE_DISPLAY_NAME_MAPPINGS == {"FDATUpscaleModelLoader": "Load Upscale Model (FDAT)"}
    assert "spandrel_fdat.install(ignore_duplicates=True)" in source


def test_comfyui_node_folder_is_written_and_rewritten(tmp_path: Path) -> None:
    folder = tmp_path / comfyui.NODE_FOLDER_NAME
    init = comfyui.write_comfyui_node(folder)
    assert init == folder / "__init__.py"
    assert init.read_text() == comfyui.node_source()
    (folder / "__pycache__").mkdir()  # left by a ComfyUI start
    assert comfyui.write_comfyui_node(folder) == init
    empty = tmp_path / "empty"
    empty.mkdir()
    assert comfyui.write_comfyui_node(empty).read_text() == comfyui.node_source()


def test_comfyui_node_refuses_folders_it_would_damage(tmp_path: Path) -> None:
    busy = tmp_path / "custom_nodes"
    (busy / "SomeoneElsesNode").mkdir(parents=True)
    with pytest.raises(ValueError, match="not empty"):
        comfyui.write_comfyui_node(busy)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {'X': object}\n")
    with pytest.raises(ValueError, match="not empty"):
        comfyui.write_comfyui_node(foreign)
    assert (foreign / "__init__.py").read_text() == "NODE_CLASS_MAPPINGS = {'X': object}\n"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        comfyui.write_comfyui_node(a_file)
    # older ComfyUI registers a node folder in sys.modules under its bare name
    for name in ("spandrel_fdat", "spandrel", "torch"):
        with pytest.raises(ValueError, match="would shadow"):
            comfyui.write_comfyui_node(tmp_path / name)
        assert not (tmp_path / name).exists()


# --- the command line ---------------------------------------------------------------------------


def test_main_is_a_click_group_with_the_host_commands() -> None:
    assert isinstance(cli.main, click.Group) and cli.main.name == "main"
    assert {"autoload", "comfyui-node"} <= set(cli.main.commands)
    autoload_group = cli.main.commands["autoload"]
    assert isinstance(autoload_group, click.Group)
    assert set(autoload_group.commands) == {"enable", "disable", "status"}
    result = run("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"spandrel-fdat {spandrel_fdat.__version__}")
    assert run("--help").exit_code == 0


def test_cli_autoload_enable_status_disable(tmp_path: Path) -> None:
    site_dir = str(tmp_path)
    status = run("autoload", "status", "--site-dir", site_dir)
    assert status.exit_code == 0 and "autoload: disabled" in status.stdout

    enable = run("autoload", "enable", "--site-dir", site_dir)
    assert enable.exit_code == 0, enable.stderr
    assert f"autoload enabled in {tmp_path}" in enable.stdout
    assert str(tmp_path / PTH_NAME) in enable.stdout and str(tmp_path / HOOK_NAME) in enable.stdout
    assert "is not a site-packages directory of this Python" in enable.stderr  # a note, still exit 0
    assert autoload.autoload_status(tmp_path).state == "enabled"

    again = run("autoload", "enable", "--site-dir", site_dir)
    assert again.exit_code == 0 and "already enabled" in again.stdout

    status = run("autoload", "status", "--site-dir", site_dir)
    assert status.exit_code == 0
    assert "autoload: enabled" in status.stdout and str(tmp_path / PTH_NAME) in status.stdout
    assert "hook loaded in this interpreter: no" in status.stdout

    disable = run("autoload", "disable", "--site-dir", site_dir)
    assert disable.exit_code == 0 and "autoload disabled" in disable.stdout
    assert list(tmp_path.iterdir()) == []
    disable = run("autoload", "disable", "--site-dir", site_dir)
    assert disable.exit_code == 0 and "was not enabled" in disable.stdout


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    assert_one_line_error(run("autoload", "frobnicate"), "No such command", "spandrel-fdat autoload --help")
    assert_one_line_error(run("comfyui-node"), "Missing argument")
    assert_one_line_error(run("--no-such-option"), "No such option")

    (tmp_path / PTH_NAME).write_text("import something_else\n")
    assert_one_line_error(run("autoload", "enable", "--site-dir", str(tmp_path)), "not written by spandrel-fdat")
    assert_one_line_error(run("autoload", "disable", "--site-dir", str(tmp_path)), "not written by spandrel-fdat")

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(run("autoload", "enable", "--site-dir", str(blocker / "site-packages")), str(blocker))

    assert_one_line_error(run("comfyui-node", str(blocker)), "not a folder")
    assert_one_line_error(run("comfyui-node", str(tmp_path / "spandrel_fdat")), "would shadow")


def test_cli_comfyui_node(tmp_path: Path) -> None:
    folder = tmp_path / "custom_nodes" / comfyui.NODE_FOLDER_NAME
    result = run("comfyui-node", str(folder))
    assert result.exit_code == 0, result.stderr
    assert str(folder / "__init__.py") in result.stdout and "ComfyUI/custom_nodes/" in result.stdout
    assert (folder / "__init__.py").read_text() == comfyui.node_source()
    assert run("comfyui-node", str(folder)).exit_code == 0  # written again


def test_debug_prints_the_traceback_before_the_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    quiet = run("comfyui-node", str(blocker / "node"))
    assert quiet.exit_code == 2 and "Traceback" not in quiet.stderr
    for args in (
        ["--debug", "comfyui-node", str(blocker / "node")],
        ["comfyui-node", str(blocker / "node"), "--debug"],
    ):
        loud = run(*args)
        assert loud.exit_code == 2
        assert "Traceback (most recent call last)" in loud.stderr
        assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()
