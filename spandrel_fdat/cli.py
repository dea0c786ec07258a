"""The `spandrel-fdat` command line (click).

    spandrel-fdat autoload enable|disable|status [--site-dir DIR]
    spandrel-fdat comfyui-node PATH
    spandrel-fdat inspect MODEL [--json] [--scale N]
    spandrel-fdat convert MODEL OUT.safetensors [--dtype fp16|bf16|fp32] [--onnx OUT.onnx [--onnx-dtype fp32|fp16|bf16]
        [--onnx-io fp16] [--static HxW] [--opset N]] [--force] [--scale N]
    spandrel-fdat upscale INPUT... -o OUTPUT [-m MODEL] [--tile N] [--overlap M] [--dtype D] [--device D] [--force]

`main` is the click group; new commands go on it (`@main.command()`). Every
error, click's usage errors included, is reported as one line on stderr with
exit status 2 and no traceback: commands raise click.ClickException, ValueError,
OSError or any other exception with a message that makes sense on its own.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import __version__, autoload, comfyui
from .errors import interface, scale_remedy

# torch and spandrel are imported inside the commands that need them, so that --help,
# --version, autoload and comfyui-node answer at once (bench/cli_startup.py).

__all__ = ["main"]

FC = TypeVar("FC", bound=Callable[..., Any])

PROG = "spandrel-fdat"
ERROR_EXIT = 2
DTYPE_NAMES = ("fp32", "fp16", "bf16")  # the keys of convert.DTYPES

DEFAULT_OVERLAP = 32  # upscale.DEFAULT_OVERLAP
_debug = False  # set by --debug: an error then prints its traceback before its line


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    global _debug
    _debug = _debug or value


DEBUG = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="On an error, print the Python traceback as well as the one-line message.",
)
"""`--debug`, on the group and on every command (`spandrel-fdat inspect X --debug`)."""


def _fail(message: str, prefix: str = PROG) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the message held
    click.echo(f"{prefix}: error: {line}", err=True)
    sys.exit(ERROR_EXIT)


class _OneLineErrors(click.Group):
    """A click group whose errors are one line on stderr, exit status 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _debug
        _debug = False
        if not standalone_mode:
            with interface("cli"):
                return super().main(args, prog_name, complete_var, False, **extra)
        try:
            with interface("cli"):  # messages name the command line's remedies (--scale N)
                result = super().main(args, prog_name or PROG, complete_var, False, **extra)
        except click.UsageError as error:
            path = error.ctx.command_path if error.ctx is not None else PROG
            _fail(f"{error.format_message()} (see '{path} --help')", prefix=path)
        except click.ClickException as error:
            _fail(error.format_message())
        except click.Abort:
            _fail("aborted")
        except Exception as error:  # no traceback for the user, whatever went wrong, unless --debug
            if _debug:
                traceback.print_exc()
            message = str(error) or type(error).__name__
            if isinstance(error, OSError) and error.strerror:
                message = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
            _fail(message)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name=PROG, message="%(prog)s %(version)s")
@DEBUG
def main() -> None:
    """Load, inspect, upscale with and convert FDAT super-resolution checkpoints.

    Every FDAT checkpoint layout loads, with the output of its own training code; hosts
    (chaiNNer, ComfyUI, any program that imports spandrel) get FDAT through autoload or a
    ComfyUI node.

    \b
    Examples:
      spandrel-fdat upscale photo.png -o photo_x2.png
      spandrel-fdat inspect 4x_model.pth
      spandrel-fdat COMMAND --help
    """


SITE_DIR = click.option(
    "--site-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="site-packages directory to use (default: this Python's, " + str(autoload.default_site_dir()) + ")",
)


@main.group("autoload")
def autoload_group() -> None:
    """Register FDAT whenever a program of this Python environment imports spandrel (opt-in).

    \b
    Example:
      spandrel-fdat autoload enable && spandrel-fdat autoload status
    """


def _describe(status: autoload.AutoloadStatus) -> list[str]:
    return [f"  start-up file: {status.pth_file}", f"  hook module:   {status.hook_file}"]


def _startup_note(status: autoload.AutoloadStatus) -> None:
    if not status.read_at_startup:
        click.echo(
            f"note: {status.site_dir} is not a site-packages directory of this Python ({sys.executable}); "
            "the hook runs only in interpreters that read it at start-up",
            err=True,
        )


@autoload_group.command("enable")
@SITE_DIR
def autoload_enable(site_dir: Path | None) -> None:
    """Install the start-up hook (idempotent).

    \b
    Example:
      spandrel-fdat autoload enable
    """
    before = autoload.autoload_status(site_dir)
    autoload.enable_autoload(site_dir)
    after = autoload.autoload_status(site_dir)
    if before.state == "enabled":
        click.echo(f"autoload already enabled in {after.site_dir} (nothing changed)")
    else:
        click.echo(f"autoload enabled in {after.site_dir}")
    for line in _describe(after):
        click.echo(line)
    click.echo("FDAT is registered with spandrel as soon as a program using this environment imports spandrel.")
    _startup_note(after)


@autoload_group.command("disable")
@SITE_DIR
def autoload_disable(site_dir: Path | None) -> None:
    """Remove the start-up hook.

    \b
    Example:
      spandrel-fdat autoload disable
    """
    status = autoload.autoload_status(site_dir)
    if autoload.disable_autoload(site_dir):
        click.echo(f"autoload disabled in {status.site_dir}: removed its files")
        for line in _describe(status):
            click.echo(line)
    else:
        click.echo(f"autoload was not enabled in {status.site_dir} (nothing to remove)")


def _registered_line(hook_loaded: bool) -> str:
    """Whether FDAT is in spandrel's registry here, without importing spandrel (which would take seconds)."""
    if "spandrel" not in sys.modules:  # the hook registers FDAT as soon as spandrel is imported
        return "yes, when spandrel is imported" if hook_loaded else "no"
    return "yes" if _registered() else "no"


def _registered() -> bool:
    from spandrel import MAIN_REGISTRY

    from .arch import ARCH_ID, FDATArch

    present = MAIN_REGISTRY.get(ARCH_ID)
    return present is not None and isinstance(present.architecture, FDATArch)


@autoload_group.command("status")
@SITE_DIR
def autoload_status(site_dir: Path | None) -> None:
    """Show whether the start-up hook is installed.

    \b
    Example:
      spandrel-fdat autoload status
    """
    status = autoload.autoload_status(site_dir)
    explanations = {
        "enabled": "enabled",
        "disabled": "disabled",
        "outdated": "enabled, hook from another spandrel-fdat version (run `spandrel-fdat autoload enable` to refresh)",
        "incomplete": "incomplete: one of its files is missing (run `enable` to repair or `disable` to clean up)",
        "conflict": "conflict: files of the same names were not written by spandrel-fdat: "
        + ", ".join(str(p) for p in status.foreign),
    }
    click.echo(f"autoload: {explanations[status.state]}")
    click.echo(f"  site-packages: {status.site_dir}")
    if status.state != "disabled":
        for line in _describe(status):
            click.echo(line)
    click.echo(f"  hook loaded in this interpreter: {'yes' if status.loaded else 'no'}")
    click.echo(f"  FDAT registered with spandrel in this interpreter: {_registered_line(status.loaded)}")
    _startup_note(status)


@main.command("comfyui-node")
@DEBUG
@click.argument("path", type=click.Path(path_type=Path))
def comfyui_node(path: Path) -> None:
    """Write a ComfyUI custom-node folder at PATH that registers FDAT at ComfyUI's start-up.

    \b
    Example:
      spandrel-fdat comfyui-node ComfyUI/custom_nodes/spandrel-fdat
    """
    init = comfyui.write_comfyui_node(path)
    folder = init.parent
    click.echo(f"wrote {init}")
    click.echo(
        f"Copy or link {folder} into ComfyUI/custom_nodes/ and install spandrel-fdat into ComfyUI's Python; "
        "restart ComfyUI. It declares no nodes: 'Load Upscale Model' then loads FDAT checkpoints."
    )


SCALE = click.option(
    "--scale",
    type=click.IntRange(1, 16),
    default=None,
    help="Scale to use only where the checkpoint does not record it (LHAN nearest_conv, some unshuffle files).",
)


def _dtype_option(help_text: str) -> Callable[[FC], FC]:
    """`--dtype fp32|fp16|bf16` (default fp32), for the commands that take one."""
    return click.option(
        "--dtype", type=click.Choice(list(DTYPE_NAMES)), default="fp32", show_default=True, help=help_text
    )


def _parse_static(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """`--static HxW` -> (H, W)."""
    if value is None:
        return None
    h, sep, w = value.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 480x720, got {value!r}")
    return int(h), int(w)


def _warn(messages: Sequence[str]) -> None:
    for message in messages:
        click.echo(f"warning: {message}", err=True)


@main.command("inspect")
@DEBUG
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys documented in the README).")
@SCALE
def inspect_command(model: Path, as_json: bool, scale: int | None) -> None:
    """Show what the FDAT checkpoint MODEL holds: layout, configuration, scale, dtypes, metadata.

    \b
    Examples:
      spandrel-fdat inspect 4x_model.pth
      spandrel-fdat inspect 4x_model.safetensors --json
    """
    import json

    from .report import build_report, format_report

    report = build_report(model, scale=scale)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@main.command("convert")
@DEBUG
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT.safetensors", type=click.Path(path_type=Path))
@_dtype_option(
    "Precision of what is written: the safetensors weights (integer buffers such as MetaUpsample are kept) "
    "and, with --onnx, the graph's weights and computation."
)
@click.option("--onnx", "onnx", type=click.Path(path_type=Path), default=None, help="Also export an ONNX graph here.")
@click.option(
    "--onnx-dtype",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default=None,
    help="The ONNX graph's precision where it differs from --dtype (e.g. bf16 weights, fp32 graph); "
    "bf16 graphs are opset 22. [default: --dtype]",
)
@click.option(
    "--onnx-io",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="Type of the ONNX graph's input and output: fp32, fp16, or bf16 for a bf16 graph.",
)
@click.option(
    "--static",
    metavar="HxW",
    callback=_parse_static,
    default=None,
    help="Fix the ONNX input's height and width (TensorRT, vs-mlrt); default: dynamic batch, height, width.",
)
@click.option("--opset", type=click.IntRange(14, None), default=17, show_default=True, help="ONNX opset (14 or newer).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@SCALE
def convert_command(
    model: Path,
    out: Path,
    dtype: str,
    onnx: Path | None,
    onnx_dtype: str | None,
    onnx_io: str,
    static: tuple[int, int] | None,
    opset: int,
    force: bool,
    scale: int | None,
) -> None:
    """Write the FDAT checkpoint MODEL as a clean OUT.safetensors (configuration in its metadata).

    \b
    Examples:
      spandrel-fdat convert 4x_model.pth 4x_model.safetensors
      spandrel-fdat convert 4x_model.pth 4x_model.fp16.safetensors --dtype fp16 --onnx 4x_model.fp16.onnx
      spandrel-fdat convert 4x_model.pth m.safetensors --onnx m_720x480.onnx --onnx-dtype fp16 --static 480x720
    """
    from .convert import DTYPES, convert_checkpoint, onnx_graph_dtype
    from .onnx_bf16 import graph_opset

    graph_dtype = onnx_graph_dtype(dtype, onnx_dtype, onnx_io) if onnx is not None else dtype
    options = dict(dtype=graph_dtype, io_dtype=onnx_io, static=static, opset=opset)
    result = convert_checkpoint(
        model, out, dtype=DTYPES[dtype], onnx=onnx, force=force, scale=scale, onnx_options=options
    )
    _warn(result.warnings)
    if result.scale_guessed:
        click.echo(
            f"note: the checkpoint's shapes do not record its scale; x{result.config.scale} is stored in the metadata "
            "(pass --scale N for another), which spandrel-fdat and load_model read back; in a host, which loads "
            f"through spandrel and does not read it, choose with {scale_remedy('host')}",
            err=True,
        )
    config = result.config
    click.echo(
        f"wrote {result.safetensors} ({dtype}; FDAT {config.layout} {config.upsampler_type} x{config.scale}, "
        f"{config.embed_dim}dim; configuration in its metadata)"
    )
    if result.onnx is not None:
        shape = f"static 1x{static[0]}x{static[1]}" if static else "dynamic batch/height/width"
        written = graph_opset(graph_dtype, opset)  # bf16 graphs: opset 22 at least
        click.echo(f"wrote {result.onnx} (ONNX opset {written}, {graph_dtype} with {onnx_io} input/output, {shape})")


class _Tile(click.ParamType):
    """`auto` or a whole number of pixels, at least 0."""

    name = "auto|N"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            number = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is not auto or a whole number", param, ctx)
        if number < 0:
            self.fail(f"{number} is negative (0: the whole image)", param, ctx)
        return number


TILE = _Tile()


@main.command("upscale")
@DEBUG
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), default=None, help="FDAT checkpoint (default: the bundled x2)."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=str),
    help="Output file (one input, with an image extension) or folder (exists, ends with /, or several inputs).",
)
@click.option(
    "--tile",
    type=TILE,
    default="auto",
    show_default=True,
    help="Tile side in input pixels (rounded up to the model's window); 0: the whole image at once; "
    "auto: the whole image when it fits in memory (exact), else the largest tile that fits.",
)
@click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help=f"Overlap of neighbouring tiles in input pixels, at most half the tile [default: {DEFAULT_OVERLAP}].",
)
@_dtype_option("Precision the model runs in (fp16 on CPU works, but slowly).")
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "mps"]), default=None, help="[default: cuda, else mps, else cpu]"
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs (else they are skipped and count as failed).")
@click.option("--resume", is_flag=True, help="Skip outputs that already exist (a stopped run goes on where it was).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Threads that read and that write around the model; 0: one image at a time.",
)
@SCALE
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray Data: a local Ray when no ADDRESS (or 'local'), else a cluster (auto, ray://host:10001). "
    "Give it after the inputs, or with a value, so an input is not taken for the ADDRESS.",
)
@click.option(
    "--ray-actors",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --ray: model actors, each with its own copy of the model [default: 1].",
)
@click.option(
    "--ray-cpus",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="N",
    help="With --ray: CPUs per actor; torch runs on that many threads in it (at least 1) [default: 1].",
)
@click.option(
    "--ray-gpus",
    type=click.FloatRange(min=0),
    default=None,
    metavar="F",
    help="With --ray: GPUs per actor (1: one GPU each; 0.5: two actors share one) [default: 0].",
)
@click.option(
    "--ray-batch",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="With --ray: images handed to an actor at a time [default: 1].",
)
def upscale_command(
    inputs: tuple[str, ...],
    model: Path | None,
    output: str,
    tile: int | str,
    overlap: int | None,
    dtype: str,
    device: str | None,
    force: bool,
    resume: bool,
    workers: int,
    scale: int | None,
    ray_address: str | None,
    ray_actors: int | None,
    ray_cpus: float | None,
    ray_gpus: float | None,
    ray_batch: int | None,
) -> int:
    """Upscale image files and folders (PNG, JPEG, WebP, TIFF; 8/16-bit; grey, RGB, alpha) with an FDAT model.

    -o is one file when it has an image extension and there is one input image; a folder when it
    exists, ends with a path separator, or there are several inputs. An unknown extension
    (e.g. .bmp), or one input and an -o with no extension, is an error. --tile auto runs each
    image whole (exact) when it fits in memory, else in the largest tiles that fit. Images are
    read and written by --workers threads around the model; --resume skips existing outputs.
    --ray runs the same job on Ray Data, where INPUT and -o may also be URIs (s3://, gs://);
    --ray-actors/--ray-cpus/--ray-gpus/--ray-batch size its actors and apply with --ray only.

    Exit status: 0 all done, 1 some images failed (each reported on one line), 2 nothing run.

    \b
    Examples:
      spandrel-fdat upscale photo.jpg -o photo_x2.png
      spandrel-fdat upscale photos/ -o upscaled/ --resume
      spandrel-fdat upscale shots/ more.jpg -m 4x_model.pth -o out/ --dtype fp16 --device cuda
      spandrel-fdat upscale photos/ -o upscaled/ --ray --ray-actors 2 --ray-cpus 2
      spandrel-fdat upscale /shared/in -o /shared/out/ --ray auto --ray-actors 8 --ray-gpus 1 --resume
    """
    from .paths import is_uri

    ray_options = {"--ray-actors": ray_actors, "--ray-cpus": ray_cpus, "--ray-gpus": ray_gpus, "--ray-batch": ray_batch}
    if ray_address is None:
        for flag, value in ray_options.items():
            if value is not None:
                raise click.UsageError(f"{flag} applies with --ray only: add --ray [ADDRESS] or drop {flag}")
        for name in (*inputs, output):
            if is_uri(name):  # pathlib would read s3://b/x as the local s3:/b/x
                raise click.UsageError(
                    f"{name}: URIs (s3://, gs://, ...) are read and written with --ray only; add --ray"
                )
    # libgomp's default spin-wait slows torch's threads badly when other processes share the cores
    # (bench/pipeline.py); read once when torch loads, so set before it is imported; yours wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from . import upscale

    run: Callable[..., Any]
    if ray_address is not None:  # --ray: the same steps on Ray Data (spandrel_fdat.distributed)
        from . import distributed

        sizing: dict[str, Any] = dict(
            concurrency=ray_actors, num_cpus=ray_cpus, num_gpus=ray_gpus, batch_size=ray_batch
        )
        run = functools.partial(  # options not given keep upscale_ray's defaults
            distributed.upscale_ray,
            address=None if ray_address == "local" else ray_address,
            **{name: value for name, value in sizing.items() if value is not None},
        )
    else:
        run = functools.partial(upscale.upscale_files, workers=workers)
    summary = run(
        inputs,
        output,
        model=model,
        tile=tile,
        overlap=overlap,
        dtype=dtype,
        device=device,
        force=force,
        resume=resume,
        scale=scale,
    )
    click.echo(summary.line())
    return 1 if summary.failed else 0


if __name__ == "__main__":
    main()
