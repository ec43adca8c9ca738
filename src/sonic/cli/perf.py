"""``sonic perf`` (perf_analyzer's command line, sweep, scrape, report) and ``sonic plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sonic.cli.options import progress


@click.group(invoke_without_command=True, context_settings={"show_default": True})
@click.option("-m", "model", help="Model name (required unless a subcommand is given).")
@click.option("-x", "version", default="", help="Model version (default: the server's choice).")
@click.option("-u", "url", help="Server address (default localhost:8000 http / 8001 grpc).")
@click.option("-i", "protocol", type=click.Choice(["http", "grpc"], case_sensitive=False),
              default="http")
@click.option("-b", "batch_size", type=click.IntRange(min=1), default=1)
@click.option("--concurrency-range", help="start[:end[:step]] requests in flight.")
@click.option("--request-rate-range", help="start[:end[:step]] requests per second.")
@click.option("--request-distribution", type=click.Choice(["constant", "poisson"]),
              default="constant")
@click.option("-p", "--measurement-interval", type=click.IntRange(min=1), default=5000,
              help="Window length (ms) in time_windows mode.")
@click.option("--measurement-mode", type=click.Choice(["time_windows", "count_windows"]),
              default="time_windows")
@click.option("--measurement-request-count", type=click.IntRange(min=1), default=50)
@click.option("-s", "--stability-percentage", type=click.FloatRange(min=0), default=10.0)
@click.option("-r", "--max-trials", type=click.IntRange(min=3), default=10)
@click.option("--percentile", type=click.IntRange(1, 99), help="Stabilize on this percentile.")
@click.option("--shared-memory", type=click.Choice(["none", "system", "cuda"]), default="none")
@click.option("--output-shared-memory-size", type=click.IntRange(min=1), default=102400)
@click.option("--input-data", default="random", help="zero, random or a JSON data file.")
@click.option("--shape", "shapes", multiple=True, help="NAME:d1,d2 for variable dims.")
@click.option("-f", "csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--verbose-csv", is_flag=True)
@click.option("--collect-metrics", is_flag=True, help="Scrape nv_gpu_* from --metrics-url.")
@click.option("--metrics-url", default="localhost:8002/metrics")
@click.option("--metrics-interval", type=click.IntRange(min=10), default=1000)
@click.option("--profile-export-file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-H", "headers", multiple=True, help="'name:value' header (repeatable).")
@click.option("--ssl-grpc-use-ssl", is_flag=True)
@click.option("--ssl-grpc-root-certifications-file", type=click.Path(exists=True))
@click.option("--ssl-grpc-private-key-file", type=click.Path(exists=True))
@click.option("--ssl-grpc-certificate-chain-file", type=click.Path(exists=True))
@click.option("--ssl-https-verify-peer", type=click.Choice(["0", "1"]), default="1")
@click.option("--ssl-https-verify-host", type=click.Choice(["0", "1", "2"]), default="2")
@click.option("--ssl-https-ca-certificates-file", type=click.Path(exists=True))
@click.option("--ssl-https-client-certificate-file", type=click.Path(exists=True))
@click.option("--ssl-https-private-key-file", type=click.Path(exists=True))
@click.option("--async", "async_", is_flag=True, help="Accepted; sonic perf is always async.")
@click.option("--sync", is_flag=True, help="Accepted; sonic perf is always async.")
@click.option("--processes", type=click.IntRange(min=1), default=1,
              help="Load-generating processes (sonic's own flag).")
@click.pass_context
def perf(ctx: click.Context, **o: Any) -> None:
    """perf_analyzer's command line: measure a model at concurrency or request-rate levels.

    The measurement (windows stable within -s percent over the last 3), the
    server-side breakdown and the -f CSV are perf_analyzer's.  Subcommands
    sweep, scrape and report build on it.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sonic.perf.analyzer import Options, Unstable, analyze, parse_range
    from sonic.perf.inputs import parse_shapes
    from sonic.perf.profiler import Settings
    from sonic.perf.target import Target, parse_header

    if not o["model"]:
        raise click.UsageError("-m (model name) is required")
    if o["shared_memory"] == "cuda":
        raise click.UsageError("--shared-memory cuda is not available: this build has no CUDA "
                               "shared memory; use system")  # fmt: skip
    protocol = o["protocol"].lower()
    kind = "grpc" if protocol == "grpc" else "https"
    try:
        levels: list[tuple[str, float]] = [("concurrency", 1)]
        if o["request_rate_range"]:
            levels = [("rate", v) for v in parse_range(o["request_rate_range"], float)]
        if o["concurrency_range"]:
            levels = [("concurrency", v) for v in parse_range(o["concurrency_range"])]
        prefix = f"ssl_{kind}_"
        ssl_options = {k.removeprefix(prefix): str(v) for k, v in o.items()
                       if k.startswith(prefix) and v and not isinstance(v, bool)}  # fmt: skip
        ssl = o["ssl_grpc_use_ssl"] if kind == "grpc" else bool(
            o["ssl_https_ca_certificates_file"] or o["ssl_https_client_certificate_file"])
        url = o["url"] or ("localhost:8001" if kind == "grpc" else "localhost:8000")
        target = Target(url, protocol, o["model"], o["version"],
                        tuple(parse_header(h) for h in o["headers"]), ssl, ssl_options)  # fmt: skip
        settings = Settings(o["measurement_mode"], o["measurement_interval"],
                            o["measurement_request_count"], o["stability_percentage"],
                            o["max_trials"], o["percentile"], o["processes"],
                            o["request_distribution"])  # fmt: skip
        opts = Options(o["batch_size"], levels, settings, o["input_data"],
                       parse_shapes(o["shapes"]), o["shared_memory"],
                       o["output_shared_memory_size"], o["csv_file"], o["verbose_csv"],
                       o["collect_metrics"], o["metrics_url"], o["metrics_interval"],
                       o["profile_export_file"])  # fmt: skip
        analyze(target, opts, log=click.echo)
    except Unstable as err:
        click.echo(str(err), err=True)
        raise SystemExit(2) from None
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    except Exception as err:  # a server that is down, a model it does not have, ...
        raise click.ClickException(f"{type(err).__name__}: {err}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, not {text!r}") from None


def _write_table(rows: list[dict[str, Any]], out: Path, parquet: Path | None) -> None:
    from sonic.perf import tidy

    tidy.write(rows, out, parquet)
    click.echo(f"wrote {len(rows)} rows to {out}" + (f" and {parquet}" if parquet else ""))


@perf.command("sweep", context_settings={"show_default": True})
@click.option("-m", "model", required=True)
@click.option("-u", "url", required=True)
@click.option("-i", "protocol", type=click.Choice(["http", "grpc"]), default="grpc")
@click.option("-x", "version", default="")
@click.option("--batch-sizes", default="1", help="Comma-separated, e.g. 1,8,64.")
@click.option("--concurrency", "concurrencies", default="1,2,4,8", help="Comma-separated.")
@click.option("--instance-counts", default="", help="Reload with each count (explicit mode).")
@click.option("--max-queue-delays", default="", help="dynamic_batching delays in us.")
@click.option("--preferred-batch-sizes", default="",
              help="Sets separated by ';', e.g. '8,16;32'.")
@click.option("-p", "--measurement-interval", type=click.IntRange(min=1), default=2000)
@click.option("-s", "--stability-percentage", type=click.FloatRange(min=0), default=10.0)
@click.option("-r", "--max-trials", type=click.IntRange(min=3), default=10)
@click.option("--input-data", default="random")
@click.option("--shape", "shapes", multiple=True)
@click.option("--server-name", default="", help="Recorded in the table (e.g. sonic, triton).")
@click.option("--hardware", default="", help="Recorded in the table (e.g. cpu, h200).")
@click.option("-o", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("sweep.csv"))
@click.option("--parquet", type=click.Path(path_type=Path, dir_okay=False))
def perf_sweep(model: str, url: str, protocol: str, version: str, batch_sizes: str,
               concurrencies: str, instance_counts: str, max_queue_delays: str,
               preferred_batch_sizes: str, measurement_interval: int,
               stability_percentage: float, max_trials: int, input_data: str,
               shapes: tuple[str, ...], server_name: str, hardware: str, out: Path,
               parquet: Path | None) -> None:  # fmt: skip
    """Measure batch sizes x concurrencies (x instance counts x batcher settings)."""
    from sonic.perf.inputs import parse_shapes
    from sonic.perf.profiler import Settings
    from sonic.perf.sweep import SweepSpace, sweep
    from sonic.perf.target import Target

    preferred = [_ints(p) for p in preferred_batch_sizes.split(";") if p.strip()]
    space = SweepSpace(_ints(batch_sizes), _ints(concurrencies), _ints(instance_counts),
                       _ints(max_queue_delays), preferred)  # fmt: skip
    settings = Settings(interval_ms=measurement_interval, stability_pct=stability_percentage,
                        max_trials=max_trials)  # fmt: skip
    meta = {"server": server_name or None, "hardware": hardware or None, "protocol": protocol,
            "source": f"sonic perf sweep {url}"}  # fmt: skip
    bar, advance = progress(space.size(), f"sweeping {model}")
    with bar:  # type: ignore[attr-defined]
        rows = sweep(Target(url, protocol, model, version), space, settings, meta,
                     input_data=input_data, shapes=parse_shapes(shapes),
                     progress=lambda _: advance(1))  # type: ignore[operator]  # fmt: skip
    _write_table(rows, out, parquet)


@perf.command("scrape")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("-o", "out", type=click.Path(path_type=Path, dir_okay=False),
              default=Path("scraped.csv"), show_default=True)
@click.option("--parquet", type=click.Path(path_type=Path, dir_okay=False))
def perf_scrape(paths: tuple[Path, ...], out: Path, parquet: Path | None) -> None:
    """Read perf_analyzer CSVs and profile exports under PATHS into one tidy table."""
    from sonic.perf.scrape import scrape

    rows = scrape(list(paths))
    if not rows:
        raise click.ClickException(f"no perf_analyzer CSV or profile export under {list(paths)}")
    _write_table(rows, out, parquet)


@perf.command("report")
@click.argument("tables", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("perf-report"), show_default=True)
@click.option("--title", default="Inference performance")
def perf_report(tables: tuple[Path, ...], out_dir: Path, title: str) -> None:
    """Plots (PNG) and one HTML page from tidy tables (sweep or scrape output)."""
    from sonic.perf import tidy
    from sonic.perf.report import write_report

    rows = [r for t in tables for r in tidy.read(t)]
    try:
        page = write_report(rows, out_dir, title)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {page} and {len(list(out_dir.glob('*.png')))} PNG files")


@click.command("plan", context_settings={"show_default": True})
@click.option("--profile", "profile_path", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Tidy table (sonic perf sweep/scrape output).")
@click.option("--model", help="Select rows of this model.")
@click.option("--server", help="Select rows of this server.")
@click.option("--hardware", help="Select rows of this hardware.")
@click.option("--batch-size", type=int, help="Select rows of this batch size.")
@click.option("--instance-count", type=int, help="Select rows of this instance count.")
@click.option("--jobs", type=click.IntRange(min=1), required=True, help="Client jobs.")
@click.option("--events-per-second", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Events per second per job.")
@click.option("--inferences-per-event", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--latency-budget-ms", type=float, help="Largest acceptable p99 latency.")
@click.option("--utilisation", type=click.FloatRange(0, 1, min_open=True), default=0.8,
              help="Target load as a fraction of the measured maximum.")
@click.option("--json", "as_json", is_flag=True)
def plan_cmd(profile_path: Path, model: str | None, server: str | None, hardware: str | None,
             batch_size: int | None, instance_count: int | None, jobs: int,
             events_per_second: float, inferences_per_event: float,
             latency_budget_ms: float | None, utilisation: float,
             as_json: bool) -> None:  # fmt: skip
    """Servers (or GPUs) needed for a workload, expected latency, clients per server."""
    import json

    from sonic.perf import tidy
    from sonic.perf.plan import Workload, plan

    want = {"model": model, "server": server, "hardware": hardware, "batch_size": batch_size,
            "instance_count": instance_count}
    rows = [r for r in tidy.read(profile_path)
            if all(v is None or r.get(k) == v for k, v in want.items())]  # fmt: skip
    try:
        p = plan(rows, Workload(jobs, events_per_second, inferences_per_event),
                 latency_budget_us=latency_budget_ms * 1000 if latency_budget_ms else None,
                 utilisation=utilisation)  # fmt: skip
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(p.as_dict(), indent=1))
        return
    click.echo(f"demand: {p.demand:.0f} inferences/s ({jobs} jobs x {events_per_second:g} "
               f"events/s x {inferences_per_event:g})")  # fmt: skip
    click.echo(f"one server: {p.max_throughput:.0f} inferences/s measured"
               + (f" within p99 <= {latency_budget_ms:g} ms" if latency_budget_ms else "")
               + f", {p.capacity_per_server:.0f} usable at {utilisation:.0%}")  # fmt: skip
    click.echo(f"servers needed: {p.servers}  ({p.load_per_server:.0f} inferences/s each, "
               f"{p.utilisation:.0%} of measured maximum)")  # fmt: skip
    click.echo(f"expected latency: avg {p.expected_avg_latency_us / 1000:.2f} ms, "
               f"p99 {p.expected_p99_latency_us / 1000:.2f} ms")  # fmt: skip
    click.echo(f"clients per server: {p.clients_per_server:.1f}")
