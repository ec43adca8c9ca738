"""``sonic sample`` and ``sonic workflow``: generate events; run the DeepMET job; train it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from sonic.cli.options import progress
from sonic.workflow.deepmet import (
    BALANCE_BATCH_SIZE,
    BALANCE_EPOCHS,
    BALANCE_LR,
    BATCH_SIZE,
    LEARNING_RATE,
)
from sonic.workflow.generate import (
    DEFAULT_PILEUP,
    DEFAULT_POOL_SIZE,
    DEFAULT_PROCESSES,
    HARD_PROCESSES,
)
from sonic.workflow.runner import DEFAULT_REPOSITORY
from sonic.workflow.tasks import TASKS


@click.command(context_settings={"show_default": True})
@click.argument("output", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--events", "n_events", type=click.IntRange(min=1), default=500)
@click.option("--process", "processes", multiple=True, default=DEFAULT_PROCESSES,
              type=click.Choice(HARD_PROCESSES),
              help="Hard processes, alternating event by event (repeatable).")
@click.option("--pileup", "pileups", type=click.FloatRange(min=0), multiple=True,
              default=(DEFAULT_PILEUP,),
              help="Mean number of pileup collisions (Poisson); repeat it for a scan, one file "
                   "per value (OUTPUT's name with -pu<value>).")
@click.option("--seed", type=int, default=1)
@click.option("--pool-size", type=click.IntRange(min=1), default=DEFAULT_POOL_SIZE,
              help="Minimum-bias events generated for pileup overlay.")
def sample(output: Path, n_events: int, processes: tuple[str, ...], pileups: tuple[float, ...],
           seed: int, pool_size: int) -> None:  # fmt: skip
    """Generate Pythia 8 events with pileup into a NanoAOD-like ROOT file OUTPUT."""
    from sonic.workflow.generate import generate_sample

    for pileup in pileups:
        path = output if len(pileups) == 1 else output.with_name(
            f"{output.stem}-pu{pileup:g}{output.suffix}")  # fmt: skip
        bar, advance = progress(n_events, f"generating {path.name}")
        done = [0]

        def step(n: int, advance: object = advance, done: list[int] = done) -> None:
            advance(n - done[0])  # type: ignore[operator]
            done[0] = n

        with bar:  # type: ignore[attr-defined]
            generate_sample(path, n_events, processes=list(processes), pileup=pileup, seed=seed,
                            pool_size=pool_size, progress=step)  # fmt: skip
        click.echo(f"wrote {path}")


@click.group()
def workflow() -> None:
    """The physics jobs (DeepMET, jet tagging): run them direct or as a service; train them."""


@workflow.command("run", context_settings={"show_default": True})
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--mode", type=click.Choice(["direct", "service"]), default="direct")
@click.option("--task", "tasks", multiple=True, default=("deepmet",),
              type=click.Choice(list(TASKS)),
              help="What the job runs, on the same events (repeatable: tasks chain).")
@click.option("--model-repository", type=click.Path(path_type=Path, file_okay=False),
              default=DEFAULT_REPOSITORY,
              help="Direct mode runs REPOSITORY/<model>/1/model.onnx for each task.")
@click.option("--model", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ONNX file for direct mode, instead of the repository's (one task only).")
@click.option("--model-name", default="",
              help="Model name on the servers (one task only; default: the task's own, "
                   "deepmet, particlenet_AK4, particlenet_AK8 or ak4_clustering).")
@click.option("--server", "servers", multiple=True, help="host:port (repeatable).")
@click.option("--server-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="JSON file of named servers (CMSSW format).")
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc")
@click.option("--client-mode", type=click.Choice(["sync", "async"]), default="async")
@click.option("--shared-memory", type=click.Choice(["auto", "on", "off"]), default="auto",
              help="Inputs through system shared memory to a server on this node.")
@click.option("--fallback-repository", type=click.Path(path_type=Path, file_okay=False),
              help="Repository for a local fallback server when every server fails.")
@click.option("--wake-timeout", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for servers that refuse while starting (scaled to zero).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=100, help="Events per chunk.")
@click.option("--ignore-leptons", is_flag=True, help="As CMSSW's ignore_leptons.")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("workflow-output"))
@click.option("--format", "fmt", type=click.Choice(["parquet", "root"]), default="parquet")
@click.option("--dask", help="'local' for a LocalCluster, or a scheduler address.")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="LocalCluster workers.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the timing summary as JSON.")
def workflow_run(files: tuple[Path, ...], mode: str, tasks: tuple[str, ...],
                 model_repository: Path, model: Path | None, model_name: str,
                 servers: tuple[str, ...], server_file: Path | None, protocol: str,
                 client_mode: str, shared_memory: str, fallback_repository: Path | None,
                 wake_timeout: float, chunk_size: int,
                 ignore_leptons: bool, output_dir: Path, fmt: str, dask: str | None,
                 workers: int, json_out: Path | None) -> None:  # fmt: skip
    """Run the tasks over FILES (ROOT, tree Events) and write their per-event output."""
    import json

    import uproot

    from sonic.workflow.runner import JobConfig, run_files

    cfg = JobConfig(mode=mode, tasks=tasks, model_repository=model_repository.resolve(),
                    model=model.resolve() if model else None, model_name=model_name,
                    servers=servers,
                    server_file=server_file, protocol=protocol, client_mode=client_mode,
                    shared_memory=shared_memory,
                    fallback_repository=fallback_repository, wake_timeout_s=wake_timeout,
                    chunk_size=chunk_size,
                    ignore_leptons=ignore_leptons, output_format=fmt)  # fmt: skip
    total = sum(uproot.open(f)["Events"].num_entries for f in files)
    bar, advance = progress(total, f"{mode} over {len(files)} file(s)")
    with bar:  # type: ignore[attr-defined]
        result = run_files(list(files), cfg, output_dir, dask=dask, workers=workers,
                           progress=advance)  # type: ignore[arg-type]  # fmt: skip
    click.echo(f"{result.events} events in {result.wall_s:.2f} s: "
               f"{result.events_per_s:.1f} events/s")  # fmt: skip
    click.echo("  requests: " + ", ".join(f"{t} {n}" for t, n in result.requests.items()))
    for stage, seconds in result.stages.items():
        click.echo(f"  {stage:13s} {seconds:8.3f} s  {seconds / max(result.events, 1) * 1e3:7.3f} "
                   "ms/event")  # fmt: skip
    for out in result.outputs:
        click.echo(f"wrote {out}")
    if json_out is not None:
        json_out.write_text(json.dumps(result.as_dict(), indent=1))


@workflow.command("graphdef", context_settings={"show_default": True})
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=Path("examples/model_repository/deepmet/1/model.onnx"),
              help="The trained DeepMET (sonic workflow train).")  # fmt: skip
def workflow_graphdef(repository: Path, onnx_path: Path) -> None:
    """Write the trained DeepMET as CMS serves it, a TensorFlow graphdef, as REPOSITORY/deepmet
    (serve it with sonic serve; run the job on it with sonic workflow run --mode service)."""
    from sonic.workflow.deepmet_tf import write_graphdef_model

    if (repository / "deepmet" / "1" / "model.onnx").resolve() == onnx_path.resolve():
        raise click.BadParameter("write into another repository than the ONNX model's own",
                                 param_hint="REPOSITORY")  # fmt: skip
    click.echo(f"wrote {write_graphdef_model(onnx_path, repository)}")


@workflow.command("train", context_settings={"show_default": True})
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--tune", type=click.Choice(["resolution", "response"]), default="resolution",
              help="CMS's two trainings: MSE alone, or with the response-balancing term.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="[default: the tune's version in examples/model_repository/deepmet]")
@click.option("--epochs", type=click.IntRange(min=1), default=25)
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE,
              help="events per optimizer step; the response term balances each batch's sums")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=LEARNING_RATE,
              help="Adam's initial learning rate (cosine schedule)")
@click.option("--balance-epochs", type=click.IntRange(min=0), default=BALANCE_EPOCHS,
              help=f"response tune: epochs more in batches of {BALANCE_BATCH_SIZE} from "
                   f"learning rate {BALANCE_LR:g}, which balance the response on more events")
@click.option("--seed", type=int, default=0)
def workflow_train(files: tuple[Path, ...], tune: str, out: Path | None, epochs: int,
                   batch_size: int, lr: float, balance_epochs: int, seed: int) -> None:  # fmt: skip
    """Train DeepMET with PyTorch on generated FILES and export it to ONNX (--out)."""
    from sonic.workflow import deepmet

    out = out or Path("examples/model_repository/deepmet", deepmet.TUNE_VERSIONS[tune],
                      "model.onnx")  # fmt: skip
    inputs, target = deepmet.load_training_data(list(files))
    processes = deepmet.process_ids(list(files))
    balance_epochs = deepmet.balancing(tune, balance_epochs)
    then = (f", then {balance_epochs} more epochs in batches of {BALANCE_BATCH_SIZE}"
            if balance_epochs else "")  # fmt: skip
    click.echo(f"{len(inputs)} events, up to {inputs.tensors['input'].shape[1]} candidates; "
               f"batches of {batch_size}, learning rate {lr:g}{then}")
    bar, report = _epochs(epochs + balance_epochs)
    with bar:  # type: ignore[attr-defined]
        net, result = deepmet.train(inputs, target, tune=tune, epochs=epochs, seed=seed,
                                    batch_size=batch_size, lr=lr, progress=report,
                                    groups=processes, balance_epochs=balance_epochs)  # fmt: skip
    deepmet.export_onnx(net, out)
    click.echo(f"trained in {result.seconds:.0f} s; wrote {out}")


@workflow.command("train-tagger", context_settings={"show_default": True})
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--repository", type=click.Path(path_type=Path, file_okay=False),
              default=Path("examples/model_repository"),
              help="Writes REPOSITORY/particlenet_AK4 or _AK8 (model, config, labels, "
                   "checksums).")
@click.option("--jets", type=click.Choice(["ak4", "ak8"]), default="ak4",
              help="AK4 flavour tagging (particlenet_AK4) or AK8 top tagging (particlenet_AK8).")
@click.option("--epochs", type=click.IntRange(min=1), default=20)
@click.option("--seed", type=int, default=0)
def workflow_train_tagger(files: tuple[Path, ...], repository: Path, jets: str, epochs: int,
                          seed: int) -> None:  # fmt: skip
    """Train a ParticleNet tagger with PyTorch on the jets of generated FILES."""
    import numpy as np

    from sonic.workflow import particlenet

    tagger = particlenet.TAGGERS[jets]
    sample = particlenet.load_jets(list(files), tagger=tagger)
    counts = np.bincount(sample.truth.label, minlength=len(tagger.inputs.labels))
    classes = ", ".join(f"{k} {n}" for k, n in zip(tagger.inputs.labels, counts, strict=True)
                        if n)  # fmt: skip
    click.echo(f"{len(sample)} {jets} jets: {classes}")
    bar, report = _epochs(epochs)
    with bar:  # type: ignore[attr-defined]
        net, result = particlenet.train(sample, tagger, epochs=epochs, seed=seed,
                                        progress=report)  # fmt: skip
    model_dir = particlenet.write_model(net, repository, tagger)
    click.echo(f"trained in {result.seconds:.0f} s; wrote {model_dir}")


def _epochs(epochs: int) -> tuple[object, Callable[[int, float, float], None]]:
    """A progress bar over the epochs, and the training callback that logs each one."""
    bar, advance = progress(epochs, "training")

    def report(epoch: int, train_loss: float, val_loss: float) -> None:
        advance(1)  # type: ignore[operator]
        bar.console.log(f"epoch {epoch}: train {train_loss:.4f} validation {val_loss:.4f}")  # type: ignore[attr-defined]

    return bar, report
