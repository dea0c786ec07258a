"""upscale --ray on a local Ray (num_cpus=2): the CLI's bytes, per-image errors, --resume, a killed worker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'spandrel-fdat[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'spandrel-fdat[ray]')")

from spandrel_fdat import distributed, upscale  # noqa: E402


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray") / "died"


@pytest.fixture(scope="module", autouse=True)
def local_ray(marker: Path):  # type: ignore[no-untyped-def]
    """One Ray for the module; its workers die once on an input named kill.png (see distributed.TEST_EXIT_ENV)."""
    env = {distributed.TEST_EXIT_ENV: f"kill.png:{marker}"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        if i % 2:  # 16-bit grey: kept exact through the binary read and our decoder
            Image.fromarray(rng.integers(0, 65535, (20, 22), dtype=np.uint16)).save(folder / name)
        else:
            Image.fromarray(rng.integers(0, 255, (18, 24, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _cli(inputs: Path, out: Path) -> upscale.Summary:
    return upscale.upscale_files([inputs], f"{out}/", device="cpu", workers=0, progress=False, report=lambda _: None)


def _ray(inputs: Path, out: Path, **options: object) -> upscale.Summary:
    return distributed.upscale_ray([inputs], f"{out}/", device="cpu", **options)  # type: ignore[arg-type]


def test_outputs_are_the_cli_bytes(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    assert _ray(inputs, tmp_path / "ray", concurrency=2, batch_size=2).done == 3
    assert _cli(inputs, tmp_path / "cli").done == 3
    for name in ("a.png", "b.png", "c.png"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_a_corrupt_image_is_named_and_the_rest_written(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", ["a.png", "b.png"])
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    summary = _ray(inputs, tmp_path / "out", batch_size=3)
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.failures == (inputs / "broken.png",)
    assert "failed: " + str(inputs / "broken.png") in summary.line()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


def test_resume_finishes_a_stopped_job_without_redoing_work(tmp_path: Path) -> None:
    names = ["a.png", "b.png", "c.png", "d.png"]
    inputs = _images(tmp_path / "in", names)
    out = tmp_path / "out"
    half = _images(tmp_path / "half", names[:2])  # the same first two images: a job stopped halfway
    assert _ray(half, out).done == 2
    before = {n: (os.stat(out / n).st_ino, os.stat(out / n).st_mtime_ns) for n in names[:2]}
    summary = _ray(inputs, out, resume=True)
    assert (summary.done, summary.skipped, summary.failed) == (2, 2, 0)
    assert {n: (os.stat(out / n).st_ino, os.stat(out / n).st_mtime_ns) for n in names[:2]} == before
    assert sorted(p.name for p in out.iterdir()) == names
    assert _cli(inputs, tmp_path / "cli").done == 4
    assert all((out / n).read_bytes() == (tmp_path / "cli" / n).read_bytes() for n in names)


def test_a_killed_worker_loses_and_duplicates_nothing(tmp_path: Path, marker: Path) -> None:
    names = ["a.png", "kill.png", "c.png", "d.png"]
    inputs = _images(tmp_path / "in", names)
    assert not marker.exists()
    summary = _ray(inputs, tmp_path / "out")
    assert marker.exists()  # the actor did die (os._exit) on kill.png
    assert (summary.done, summary.failed) == (4, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)  # no temporary or extra files
    assert _cli(inputs, tmp_path / "cli").done == 4
    assert all((tmp_path / "out" / n).read_bytes() == (tmp_path / "cli" / n).read_bytes() for n in names)


def test_without_ray_the_cli_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from spandrel_fdat.cli import main

    inputs = _images(tmp_path / "in", ["a.png"])
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(main, ["upscale", str(inputs), "-o", f"{tmp_path / 'out'}/", "--ray"])
    assert result.exit_code != 0
    assert "pip install 'spandrel-fdat[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
