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


def _noise16(folder: Path, names: list[str]) -> Path:
    """16-bit grey noise: its float sums round differently on 1 and 2 torch threads (the output's last bits)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        Image.fromarray(np.random.default_rng(seed).integers(0, 65535, (24, 26), dtype=np.uint16)).save(folder / name)
    return folder


def test_the_cli_options_size_the_actors_and_their_threads_give_the_cli_bytes(tmp_path: Path) -> None:
    """--ray-cpus N: torch on N threads in each actor, so the bytes of the CLI on N threads."""
    import torch

    from tests.helpers import run_cli

    names = ["a.png", "b.png"]
    inputs = _noise16(tmp_path / "in", names)
    threads = torch.get_num_threads()
    cli: dict[int, dict[str, bytes]] = {}
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert _cli(inputs, tmp_path / f"cli{count}").done == 2
            cli[count] = {n: (tmp_path / f"cli{count}" / n).read_bytes() for n in names}
    finally:
        torch.set_num_threads(threads)
    assert cli[1] != cli[2]  # else this test could not tell the thread counts apart
    for cpus, actors in ((2, 1), (1, 2)):
        out = tmp_path / f"ray{cpus}"
        options = ["--ray-actors", str(actors), "--ray-cpus", str(cpus), "--ray-gpus", "0", "--ray-batch", "2"]
        result = run_cli("upscale", inputs, "-o", f"{out}/", "--device", "cpu", "--ray", "local", *options)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("upscaled 2 of 2 images (0 failed)")
        assert {n: (out / n).read_bytes() for n in names} == cli[cpus]


def test_an_actor_larger_than_the_local_ray_is_refused(tmp_path: Path) -> None:
    from tests.helpers import assert_one_line_error, run_cli

    inputs = _images(tmp_path / "in", ["a.png"])
    result = run_cli("upscale", inputs, "-o", f"{tmp_path / 'out'}/", "--ray", "local", "--ray-cpus", "3")
    assert_one_line_error(result, "--ray-cpus 3 (num_cpus): no node of this Ray has 3 CPUs (the largest has 2)")
    result = run_cli("upscale", inputs, "-o", f"{tmp_path / 'out'}/", "--ray", "local", "--ray-gpus", "1")
    assert_one_line_error(result, "--ray-gpus 1 (num_gpus): no node of this Ray has 1 GPUs (the largest has 0)")
    assert not (tmp_path / "out").exists()


def test_without_ray_the_cli_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from spandrel_fdat.cli import main

    inputs = _images(tmp_path / "in", ["a.png"])
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(main, ["upscale", str(inputs), "-o", f"{tmp_path / 'out'}/", "--ray"])
    assert result.exit_code != 0
    assert "pip install 'spandrel-fdat[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
