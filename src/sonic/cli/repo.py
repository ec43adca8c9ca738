"""``sonic repo``: write, import, convert, configure and check Triton model repositories."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _directories(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One or more existing directories as the command's arguments."""
    return click.argument(name, nargs=-1, required=True,
                          type=click.Path(path_type=Path, exists=True, file_okay=False))


@click.group()
def repo() -> None:
    """Model-repository tools."""


@repo.command("examples")
@click.argument("directory", type=click.Path(path_type=Path), default="examples/model_repository")
@click.option(
    "--torch", "with_torch", is_flag=True, help="Also rebuild particlenet (needs the torch extra)."
)
def repo_examples(directory: Path, with_torch: bool) -> None:
    """Write the example models (mlp, simple, deepmet, facile[, particlenet]) into DIRECTORY."""
    from sonic.zoo.examples import write_example_repository

    names = write_example_repository(directory, torch=with_torch)
    click.echo(f"wrote {', '.join(names)} under {directory}")


@repo.command("config")
@click.argument("model_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--max-batch-size", type=int, help="Override max_batch_size.")
@click.option(
    "--dynamic-batching/--no-dynamic-batching", default=None, help="Add or remove dynamic_batching."
)
@click.option("--instance-count", type=int, help="Instances in the instance group.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), help="Instance kind.")
@click.option("--threads", type=int, help="onnxruntime intra/inter-op threads.")
def repo_config(model_dir: Path, **overrides: object) -> None:
    """Write MODEL_DIR/config.pbtxt completed from the model file (e.g. 1/model.onnx)."""
    from google.protobuf import text_format

    from sonic.errors import SonicError
    from sonic.tools.check import write_config

    try:
        config = write_config(model_dir, **overrides)  # type: ignore[arg-type]
    except SonicError as err:
        raise click.ClickException(str(err)) from None
    click.echo(text_format.MessageToString(config), nl=False)


@repo.command("convert")
@click.argument("source")
@click.option(
    "--repository",
    "-r",
    type=click.Path(path_type=Path),
    required=True,
    help="Model repository to write into.",
)
@click.option("--name", required=True, help="Model name (directory).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torchscript"]),
    default="onnx",
    show_default=True,
    help="Target for PyTorch sources.",
)
@click.option(
    "--example-shape",
    "shapes",
    multiple=True,
    help="PyTorch inputs as NAME:d1,d2 (FP32 zeros; first dim is the batch).",
)
@click.option("--max-batch-size", type=int, default=0, help="max_batch_size for the config.")
@click.option("--n-features", type=int, help="Feature count for scikit-learn models.")
def repo_convert(source: str, repository: Path, name: str, fmt: str, shapes: tuple[str, ...],
                 max_batch_size: int, n_features: int | None) -> None:  # fmt: skip
    """Convert SOURCE into REPOSITORY/NAME, ready to serve.

    SOURCE is a PyTorch module ('package.module:Class'), a TorchScript file (.pt), an XGBoost
    (.json/.ubj) or LightGBM (.txt) model, a pickled scikit-learn estimator (.pkl), or a
    TensorFlow SavedModel directory.
    """
    import numpy as np

    from sonic.tools import convert

    def examples() -> dict[str, object]:
        if not shapes:
            raise click.BadParameter("PyTorch sources need --example-shape NAME:d1,d2")
        out: dict[str, object] = {}
        for item in shapes:
            key, _, dims = item.partition(":")
            out[key] = np.zeros([int(d) for d in dims.split(",")], dtype=np.float32)
        return out

    path = Path(source)
    if path.is_dir() and (path / "saved_model.pb").exists():
        done = convert.convert_savedmodel(path, repository, name,
                                          max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif path.suffix in (".pt", ".pth", ".ts"):
        done = convert.convert_torchscript(path, examples(), repository, name, fmt=fmt,
                                           max_batch_size=max_batch_size)  # fmt: skip
    elif path.suffix in (".json", ".ubj", ".txt"):
        done = convert.convert_trees(path, repository, name,
                                     max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif path.suffix in (".pkl", ".pickle", ".joblib"):
        if n_features is None:
            raise click.BadParameter("scikit-learn sources need --n-features")
        done = convert.convert_sklearn(path, n_features, repository, name,
                                       max_batch_size=max_batch_size or 1024)  # fmt: skip
    elif ":" in source and not path.exists():
        done = convert.convert_torch(convert.load_object(source), examples(), repository, name,
                                     fmt=fmt, max_batch_size=max_batch_size)  # fmt: skip
    else:
        raise click.BadParameter(
            f"cannot tell what '{source}' is: give package.module:Class, a .pt, .json, .ubj, "
            ".txt or .pkl file, or a SavedModel directory"
        )
    click.echo(f"wrote {done}")
    click.echo((done / "config.pbtxt").read_text(), nl=False)


@repo.command("import")
@click.argument("source", type=click.Path(path_type=Path, exists=True))
@click.option("--repository", "-r", type=click.Path(path_type=Path), required=True,
              help="Model repository to write into.")  # fmt: skip
@click.option("--name", required=True, help="Model name (directory).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number [default: the next free one].")  # fmt: skip
@click.option("--version-name", default="", help="A symlink to the version, as CMS names them.")
@click.option("--max-batch-size", type=click.IntRange(min=0), default=None,
              help="[default: Triton's, 4, where the model's first dim is variable]")  # fmt: skip
@click.option("--input", "inputs", multiple=True,
              help="TorchScript inputs in forward() order: NAME:DIMS[:TYPE], no batch dim.")
@click.option("--output", "outputs", multiple=True,
              help="Output names (TorchScript, frozen graphs); the first gets --labels.")
@click.option("--labels", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Class labels, one a line, for the classification extension.")  # fmt: skip
@click.option("--to-onnx", is_flag=True, help="Also write a TensorFlow model as ONNX (tf2onnx).")
def repo_import(source: Path, repository: Path, name: str, version: int | None,
                version_name: str, max_batch_size: int | None, inputs: tuple[str, ...],
                outputs: tuple[str, ...], labels: Path | None, to_onnx: bool) -> None:  # fmt: skip
    """Import a model file as CMSSW ships it (.pb, SavedModel, .onnx, .pt) into REPOSITORY/NAME:
    config completed from the model, MD5 checksum agent, labels, named version symlink."""
    from sonic.errors import SonicError
    from sonic.tools.importer import ImportOptions, NotImportable, TensorArg, import_model

    try:
        options = ImportOptions(name, version or 0, version_name, max_batch_size,
                                [TensorArg.parse(t) for t in inputs], list(outputs), labels,
                                to_onnx)  # fmt: skip
        result = import_model(source, repository, options)
    except (NotImportable, ModuleNotFoundError) as err:
        raise click.UsageError(str(err)) from None
    except SonicError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result.model_dir}/{result.version}")
    click.echo((result.model_dir / "config.pbtxt").read_text(), nl=False)
    if result.onnx_dir is not None:
        click.echo(f"wrote {result.onnx_dir}/{result.version}: largest |ONNX - TensorFlow| "
                   f"on random inputs {result.onnx_max_abs_diff:.3g}")  # fmt: skip


@repo.command("check")
@_directories("repositories")
@click.option("--no-round-trip", is_flag=True, help="Only load and validate; serve nothing.")
def repo_check(repositories: tuple[Path, ...], no_round_trip: bool) -> None:
    """Load every model, validate config against model, and compare served with direct outputs."""
    from rich.console import Console
    from rich.table import Table

    from sonic.tools.check import check_repository

    logging.basicConfig(level=logging.ERROR)
    report = check_repository(list(repositories), round_trip=not no_round_trip)
    table = Table(title=f"sonic repo check {' '.join(map(str, repositories))}")
    for col in ("model", "status", "max |Δ| served vs direct", "detail"):
        table.add_column(col)
    for m in report.models:
        diff = "" if m.max_abs_diff is None else f"{m.max_abs_diff:g}"
        table.add_row(m.name, "[red]FAIL[/red]" if m.problem else "ok", diff, m.problem or m.note)
    Console(width=200).print(table)
    if not report.ok:
        raise SystemExit(1)


@repo.command("checksum")
@_directories("model_dirs")
@click.option("--update", is_flag=True, help="Write the current MD5 checksums into config.pbtxt.")
def repo_checksum(model_dirs: tuple[Path, ...], update: bool) -> None:
    """Check (or --update) the CMSSW MD5 checksums in model_repository_agents."""
    from sonic.repository.checksums import checksum_mismatches, update_checksums

    problems: list[str] = []
    for model_dir in model_dirs:
        if update:
            for key, value in update_checksums(model_dir).items():
                click.echo(f"{model_dir.name}: {key} = {value}")
        else:
            problems += checksum_mismatches(model_dir)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise SystemExit(1)


@repo.command("threadcontrol")
@click.argument("repository", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("model")
@click.option("--threads", type=int, default=1, show_default=True)
def repo_threadcontrol(repository: Path, model: str, threads: int) -> None:
    """One KIND_CPU instance and THREADS threads for MODEL (recursing into ensembles)."""
    from sonic.tools.configure import threadcontrol

    for name in threadcontrol(repository, model, threads):
        click.echo(f"updated {repository / name / 'config.pbtxt'}")
