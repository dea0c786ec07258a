"""Host sources and cached host virtual environments for the real-host tests.

The host sources come from $SPANDREL_FDAT_HOSTS: an unpacked checkout (a folder holding
`ComfyUI/` or `chaiNNer/`, or the checkout itself) or the folder with the archives
(`ComfyUI-*.tar.gz`, `chaiNNer-*.tar.gz`), which are unpacked once into the cache.

Each host gets its own venv under ~/.cache/spandrel-fdat/host-venvs/<host>-<key>, where the
key is a hash of the interpreter and the pins: a venv is only reused for exactly the pins it
was built with. A venv is built in a temporary folder beside its final place and renamed
into place when complete, so an interrupted build is never reused. spandrel_fdat itself is
(re)installed from the checkout at every test session, under a file lock.

Run as a script (`python tests/real_hosts/venvs.py comfyui chainner`) it builds the venvs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ENV_VAR = "SPANDREL_FDAT_HOSTS"
REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spandrel-fdat"

HOW_TO_RUN = (
    f"set {ENV_VAR} to a folder with the host sources (an unpacked ComfyUI or chaiNNer checkout, "
    "or the folder holding ComfyUI-*.tar.gz / chaiNNer-*.tar.gz) and run `pytest -m real_hosts`; "
    ".ci/run does this with ../shared/hosts"
)

# chaiNNer 874b878 pins (backend/src/packages/*/__init__.py, dependencies/install_server_deps.py).
# torch 2.7.0: chaiNNer takes the CPU build from download.pytorch.org on machines without an
# NVIDIA GPU; the package registry's 2.7.0 (the CUDA build) is the same version and is used here.
CHAINNER_PINS = [
    # server (install_server_deps.py)
    "sanic==23.3.0",
    "Sanic-Cors==2.2.0",
    "aiofiles==23.1.0",
    "html5tagger==1.3.0",
    "sanic-routing==22.8.0",
    "tracerite==1.1.0",
    "websockets==11.0.3",
    "typing_extensions>=4.6.2",  # chaiNNer accepts newer (it checks >=); torch 2.7.0 needs >=4.10
    "pynvml==11.5.0",
    "psutil==5.9.5",
    "aiohttp==3.9.3",
    # chaiNNer_standard (always installed by chaiNNer at start-up if missing)
    "numpy==1.24.4",
    "opencv-python==4.8.0.76",
    "Pillow==9.2.0",
    "pillow-avif-plugin==1.4.3",
    "ffmpeg-python==0.2.0",
    "requests==2.28.2",
    "google-re2==1.0",
    "scipy==1.9.3",
    "wcmatch==8.4.1",
    "numba==0.57.1",
    "PyMatting==1.1.10",
    "chainner_ext==0.3.10",
    # tracerite 1.1.0 (sanic's error pages) imports pkg_resources, which setuptools 81 removed
    "setuptools<81",
    # chaiNNer_pytorch (facexlib left out: only the face-upscale node needs it)
    "torch==2.7.0",
    "torchvision==0.22.0",
    "einops==0.6.1",
    "safetensors==0.4.0",
    "spandrel==0.4.1",
    "spandrel_extra_arches==0.2.0",
    # chaiNNer_onnx
    "onnxruntime==1.17.1",
    "onnx==1.16.0",
    "onnxoptimizer==0.3.13",
    "protobuf==4.24.2",
]


def _python() -> str:
    """The base interpreter (not a venv's), so a host venv does not depend on another venv."""
    return getattr(sys, "_base_executable", sys.executable)


def sources_root() -> Path | None:
    """$SPANDREL_FDAT_HOSTS, or None when unset or missing."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


def host_source(name: str, marker: str) -> Path | None:
    """The host's unpacked source tree (`name` is "ComfyUI" or "chaiNNer"; `marker` a file it holds)."""
    root = sources_root()
    if root is None:
        return None
    for candidate in (root, root / name):
        if (candidate / marker).is_file():
            return candidate
    archives = sorted(root.glob(f"{name}-*.tar.gz"))
    if not archives:
        return None
    archive = archives[-1]
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    target = CACHE / "host-sources" / f"{name}-{digest}"
    if not (target / name / marker).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return target / name


COMFYUI_NO_DEPS = ["torchaudio==2.11.1"]
"""ComfyUI imports torchaudio at start-up (comfy/sd.py); the registry has none for the project's torch
2.14.1, and torchaudio 2.11.1 is a pure-Python wheel that imports with it: installed without its torch pin."""


def comfyui_pins(source: Path) -> list[str]:
    """ComfyUI's requirements.txt, plus the project's torch and torchvision (ComfyUI does not pin them)."""
    lines = (source / "requirements.txt").read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    reqs = [
        r
        for r in reqs
        if r and r.split("=")[0].split(">")[0].split("<")[0].split("~")[0] not in ("torch", "torchvision", "torchaudio")
    ]
    import torch
    import torchvision  # type: ignore[import-untyped]

    return [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}", *reqs]


def _key(pins: list[str], no_deps: list[str]) -> str:
    python = subprocess.run([_python(), "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    return hashlib.sha256(json.dumps([python, pins, no_deps] if no_deps else [python, pins]).encode()).hexdigest()[:16]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def host_venv(host: str, pins: list[str], no_deps: Sequence[str] = (), log: Path | None = None) -> Path:
    """The cached venv for `host` with `pins` (then `no_deps`, without their dependencies) installed.

    Built if missing: minutes (the torch wheels and their CUDA libraries). Built beside its
    final place (venv scripts hold absolute paths) and renamed into place when complete.
    """
    venv = CACHE / "host-venvs" / f"{host}-{_key(pins, list(no_deps))}"
    if venv_python(venv).exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    build = venv.parent / f".{venv.name}.building-{os.getpid()}"
    python = str(venv_python(build))
    steps = [
        [python, "-m", "pip", "install", "-q", "--upgrade", "pip", "setuptools", "wheel"],
        [python, "-m", "pip", "install", *pins],
    ]
    if no_deps:
        steps.append([python, "-m", "pip", "install", "--no-deps", *no_deps])
    try:
        subprocess.run([_python(), "-m", "venv", str(build)], check=True)
        with open(log or os.devnull, "a") as out:
            for step in steps:
                subprocess.run(step, check=True, stdout=out, stderr=out)
        _finish(build, venv)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return venv


def _finish(build: Path, venv: Path) -> None:
    """Rename the finished build into place; its scripts name `build`, so rewrite them first."""
    for script in (build / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            try:
                text = script.read_text()
            except UnicodeDecodeError:
                continue
            if str(build) in text:
                script.write_text(text.replace(str(build), str(venv)))
    cfg = build / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(build), str(venv)))
    try:
        build.rename(venv)
    except OSError:  # another build finished first: keep that one
        shutil.rmtree(build, ignore_errors=True)


@contextlib.contextmanager
def locked(venv: Path) -> Iterator[None]:
    """Hold the venv's lock (one test session at a time changes what is installed in it)."""
    with open(venv / ".spandrel-fdat-lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pip(venv: Path, *args: str) -> None:
    """Run the venv's pip; fail with its output."""
    result = subprocess.run([str(venv_python(venv)), "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def install_plugin(venv: Path) -> str:
    """`pip install` spandrel_fdat from this checkout into the venv, as a user would; pip's output.

    Its dependencies come along where the host's versions do not satisfy them (the first
    time, over the network: click, tqdm, pypng, tifffile).
    """
    uninstall_plugin(venv)
    result = subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "install", "--no-build-isolation", str(REPO)],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RuntimeError(f"pip install {REPO} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def uninstall_plugin(venv: Path) -> None:
    pip(venv, "uninstall", "-q", "-y", "spandrel-fdat")  # pip only warns when it is not installed


def host_env(**extra: str) -> dict[str, str]:
    """The environment for a host process: ours without venv or Python path settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def main(argv: list[str]) -> None:
    for host in argv:
        if host == "comfyui":
            src = host_source("ComfyUI", "main.py")
            assert src, HOW_TO_RUN
            print(host_venv("comfyui", comfyui_pins(src), COMFYUI_NO_DEPS, log=CACHE / "comfyui-build.log"))
        elif host == "chainner":
            print(host_venv("chainner", CHAINNER_PINS, log=CACHE / "chainner-build.log"))


if __name__ == "__main__":
    main(sys.argv[1:])
