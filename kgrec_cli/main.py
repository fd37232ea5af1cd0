"""The ``kgrec`` command line: graph server, migrations, Cypher shell, imports and the whole stack."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import redis
from celery import states
from kombu.exceptions import OperationalError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from graph_schema.statements import admin
from kgrec import job_queue
from kgrec.config import Settings, queue_name
from kgrec.datasets import BUILTIN, import_source, open_dataset
from kgrec.datasets.records import write_csv_rows
from kgrec.demo_shop import DEFAULT_END, ShopSpec, generate_shop
from kgrec.embedded import EmbeddedServerError
from kgrec.gateway import GraphQueryError, GraphUnavailable
from kgrec.limits import MAX_EPOCHS, MAX_EVAL_K, MAX_IMPORT_BATCH
from kgrec.migrations import MigrationError, migrate
from kgrec.relation_sentences import SentenceTemplateError, load_sentences
from kgrec.runtime import embedded_server, graph_session
from kgrec_cli.data import data as data_group
from kgrec_cli.failure import fail
from kgrec_cli.items import items as items_group
from kgrec_cli.kg import kg as kg_group
from kgrec_cli.stack import StackError, all_queues, beat_argv, mixing_refusal, worker_argv
from workers.training.config import VARIANTS, check_device

console = Console(stderr=True)
# Failures a person can act on: printed as one line, never as a traceback.
EXPECTED_ERRORS = (
    GraphUnavailable,
    GraphQueryError,
    MigrationError,
    EmbeddedServerError,
    FileNotFoundError,
    PermissionError,
    ValueError,
    OSError,
    StackError,
    job_queue.JobQueueUnavailable,  # the broker or result store, queueing a job or reading its state
    redis.ConnectionError,  # the broker, while following a job
    redis.TimeoutError,
    EOFError,  # a truncated gzip file read outside kgrec.datasets (click would print only "Aborted!")
)


class KgrecGroup(click.Group):
    """Turns expected failures into a one-line reason and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as exc:
            fail(exc)


def _device(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return check_device(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not auto, cpu, cuda or cuda:N") from None


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(dict)["settings"]


_FOLDER = click.Path(file_okay=False, path_type=Path)


def datasets_dir_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--datasets-dir``, and ``--data-dir``: its hidden, deprecated former name."""
    command = click.option("--data-dir", "legacy_data_dir", type=_FOLDER, default=None, hidden=True)(command)
    return click.option(
        "--datasets-dir",
        type=_FOLDER,
        default=None,
        help="Folder holding the built-in data sets (default KGREC_DATASETS_DIR or ../shared/data).",
    )(command)


def _datasets_dir(settings: Settings, datasets_dir: Path | None, legacy_data_dir: Path | None) -> Path:
    return datasets_dir or legacy_data_dir or settings.datasets_dir


@click.group(cls=KgrecGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """kgrec: an e-commerce interest graph with explainable recommendations."""
    # The driver logs each retry and routing failure as a warning; a command reports the failure
    # itself, in one line.
    logging.getLogger("neo4j").setLevel(logging.CRITICAL)
    ctx.ensure_object(dict)["settings"] = Settings.from_env()


# --- graph server ----------------------------------------------------------


@main.group()
def db() -> None:
    """Manage the embedded graph server (FalkorDB) by hand."""


def _require_embedded(settings: Settings) -> None:
    if not settings.embedded:
        fail("NEO4J_URI is set: kgrec does not manage an external Neo4j")


@db.command("start")
@click.pass_context
def db_start(ctx: click.Context) -> None:
    """Start the embedded graph server in the background (stays up until `kgrec db stop`)."""
    settings = _settings(ctx)
    _require_embedded(settings)
    info = embedded_server(settings).start(detached=True)
    impressions = f" (impressions on 127.0.0.1:{info.impressions_port})" if info.impressions_port else ""
    address = f"127.0.0.1:{info.port}{impressions}"
    click.echo(f"graph server running: pid {info.pid}, {address}, data {info.data_dir}")


@db.command("stop")
@click.pass_context
def db_stop(ctx: click.Context) -> None:
    """Stop the embedded graph server cleanly."""
    settings = _settings(ctx)
    _require_embedded(settings)
    stopped = embedded_server(settings).stop()
    click.echo("graph server stopped" if stopped else "graph server was not running")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Show whether the graph server runs, where, and what it holds."""
    settings = _settings(ctx)
    status: dict[str, Any] = {"engine": "falkordb" if settings.embedded else "neo4j"}
    if settings.embedded:
        info = embedded_server(settings).running()
        status["running"] = info is not None
        if info is not None:
            status.update(
                pid=info.pid, port=info.port, data_dir=info.data_dir, attached=info.owner_pid is not None
            )
    if status.get("running", True):
        with graph_session(settings) as gateway:
            status["nodes"] = {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}
            status["relationships"] = {
                r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)
            }
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        click.echo(f"{key}: {value}")


# --- schema and queries ------------------------------------------------------


@main.command("migrate")
@click.pass_context
def migrate_command(ctx: click.Context) -> None:
    """Apply pending schema migrations (idempotent; refuses if an applied file changed)."""
    with graph_session(_settings(ctx)) as gateway:
        applied = migrate(gateway)
    if applied:
        for migration in applied:
            click.echo(f"applied {migration.id}")
    else:
        click.echo("schema is up to date")


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--param")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


@main.command("cypher")
@click.argument("query")
@click.option("--param", "params", multiple=True, help="NAME=VALUE (VALUE is JSON, else a string).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of row objects.")
@click.pass_context
def cypher_command(ctx: click.Context, query: str, params: tuple[str, ...], as_json: bool) -> None:
    """Run QUERY against the configured graph (embedded or Neo4j), like cypher-shell."""
    values = dict(_parse_param(p) for p in params)
    with graph_session(_settings(ctx)) as gateway:
        rows = gateway.run_query(query, values)
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    table = Table(*(rows[0].keys() if rows else []))
    for row in rows:
        table.add_row(*(json.dumps(v, default=str) if not isinstance(v, str) else v for v in row.values()))
    Console().print(table)
    click.echo(f"{len(rows)} row(s)")


# --- data import ---------------------------------------------------------------


def _progress_factory(progress: Progress) -> Callable[[str, int], Callable[[int], None]]:
    def start(step: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(step, total=max(total, 1))
        if total == 0:
            progress.update(task, completed=1)
        return lambda n: progress.advance(task, n)

    return start


def check_rejects_path(path: Path | None) -> None:
    """Refuse a rejects file that could not be written, before anything is imported."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        fail(f"--rejects {path}: the folder {folder} does not exist (nothing was imported)")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"--rejects {path}: cannot write there (nothing was imported)")


def _write_rejects(path: Path, problems: list[Any]) -> None:
    write_csv_rows(path, ["file", "line", "reason"], ((p.file, p.line, p.reason) for p in problems))


def run_import(settings: Settings, dataset_name: str, datasets_dir: Path, rejects: Path | None) -> None:
    """Import a data set with progress bars and print a summary (shared by `import` and `up`).

    Refused in one line, before anything is written, when the graph's last import, of another
    data set, did not finish (:func:`kgrec_cli.stack.mixing_refusal`).
    """
    check_rejects_path(rejects)
    from kgrec.importer import import_dataset, import_state

    dataset = open_dataset(dataset_name, datasets_dir)
    source = import_source(dataset_name, datasets_dir)
    with graph_session(settings, apply_migrations=True) as gateway:
        refusal = mixing_refusal(
            import_state(gateway), dataset_name, source, finish="kgrec import", data_dir=datasets_dir
        )
        if refusal is not None:
            fail(refusal)
        with Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            # a data set's name is the user's folder name: never Rich markup ("shop[/old]" raised)
            console.print(f"reading {dataset.name} ...", markup=False, highlight=False)
            report = import_dataset(gateway, dataset, settings, _progress_factory(progress), source=source)
    console.print(
        f"imported {report.dataset}: {report.nodes:,} nodes and {report.relationships:,} "
        f"relationships in {report.seconds:.1f}s ({report.relationships_per_second:,.0f} rel/s)",
        markup=False,
        highlight=False,
    )
    left_out = [
        f"{count:,} {one if count == 1 else many}"
        for count, one, many in (
            (report.erased_interactions, "interaction", "interactions"),
            (report.erased_triples, "knowledge triple (a tag)", "knowledge triples (tags)"),
        )
        if count
    ]
    if left_out:
        console.print(
            f"left out {' and '.join(left_out)} of erased users, dated at or before their erasure, or "
            "undated (Operations, Privacy)"
        )
    if report.problems:
        console.print(f"[yellow]{len(report.problems)} row(s) skipped[/yellow]:")
        for problem in report.problems[:10]:
            # one line per row however long (Rich wraps at 80 columns off a terminal), and the
            # data's own text is never read as Rich markup
            console.print(f"  {problem}", soft_wrap=True, markup=False, highlight=False)
    if rejects is not None:
        # always, as kgrec events import does: a clean run must not leave the last run's rejects
        _write_rejects(rejects, report.problems)
        if report.problems:
            console.print(f"  all skipped rows: {rejects}", soft_wrap=True, markup=False, highlight=False)


@main.command("import")
@click.argument("dataset")
@datasets_dir_options
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every skipped row (file, line, reason) to this CSV.",
)
@click.pass_context
def import_command(
    ctx: click.Context,
    dataset: str,
    datasets_dir: Path | None,
    legacy_data_dir: Path | None,
    rejects: Path | None,
) -> None:
    """Import DATASET: a built-in data set (the names of kgrec data fetch) or a folder in a known layout."""
    settings = _settings(ctx)
    run_import(settings, dataset, _datasets_dir(settings, datasets_dir, legacy_data_dir), rejects)


# --- synthetic data ---------------------------------------------------------------

# What `kgrec up --import <built-in>` serves when that data set is not on this machine.
DEMO_SHOP = ShopSpec(users=20_000, items=5_000, seed=7)
DEMO_FOLDER = "demo-shop"


def demo_fallback(dataset_name: str, datasets_dir: Path, data_dir: Path) -> Path | None:
    """The demo shop's folder when ``dataset_name`` is a built-in data set missing here, else None."""
    if dataset_name not in BUILTIN:
        return None
    try:
        open_dataset(dataset_name, datasets_dir)
    except FileNotFoundError:
        return Path(data_dir) / DEMO_FOLDER
    return None


def run_import_or_demo(
    settings: Settings, dataset_name: str, datasets_dir: Path, rejects: Path | None
) -> None:
    """`up`'s import: the named data set, or a generated demo shop when a built-in one is missing."""
    folder = demo_fallback(dataset_name, datasets_dir, settings.data_dir)
    if folder is None:
        run_import(settings, dataset_name, datasets_dir, rejects)
        return
    if not (folder / "demo_shop.json").exists():
        # ends today, so the interest half-life and pruning treat the demo's events as recent
        generate_shop(replace(DEMO_SHOP, end=datetime.now(UTC).date()), folder)
    manifest = json.loads((folder / "demo_shop.json").read_text(encoding="utf-8"))
    console.print(
        f"[bold]{dataset_name} is not in {escape(str(datasets_dir))}: serving a generated demo shop "
        f"({DEMO_SHOP.users:,} users, {DEMO_SHOP.items:,} items, {manifest['events']:,} events, "
        f"{escape(str(folder))}); "
        f"for real data run `kgrec data fetch {dataset_name}` or `kgrec import <folder>`[/bold]",
        soft_wrap=True,  # one line, however narrow the terminal
    )
    run_import(settings, str(folder), datasets_dir, rejects)


def import_record(settings: Settings, dataset_name: str, datasets_dir: Path) -> str:
    """How the graph's import record names what :func:`run_import_or_demo` imports for ``dataset_name``."""
    folder = demo_fallback(dataset_name, datasets_dir, settings.data_dir)
    if folder is not None:
        return str(folder.resolve())
    try:
        return import_source(dataset_name, datasets_dir)
    except FileNotFoundError:
        return dataset_name  # the import itself says it is not there


@main.group()
def demo() -> None:
    """A synthetic shop to try kgrec without downloading anything."""


@demo.command("generate")
@click.option("--users", default=DEMO_SHOP.users, show_default=True, type=click.IntRange(1))
@click.option("--items", default=DEMO_SHOP.items, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=DEMO_SHOP.seed, show_default=True, type=int)
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3_650), help="Days of traffic.")
@click.option(
    "--end",
    "end_text",
    default=DEFAULT_END.isoformat(),
    show_default=True,
    help="Day (YYYY-MM-DD, UTC) the traffic ends; `today` for the current day.",
)
@click.option("--out", type=_FOLDER, default=Path(DEMO_FOLDER), show_default=True)
def demo_generate(users: int, items: int, seed: int, days: int, end_text: str, out: Path) -> None:
    """Write a synthetic shop (events, catalogue, knowledge triples) in the kgrec layout to --out."""
    try:
        end = datetime.now(UTC).date() if end_text == "today" else date.fromisoformat(end_text)
    except ValueError:
        raise click.BadParameter(f"{end_text!r} is not YYYY-MM-DD or today", param_hint="--end") from None
    summary = generate_shop(ShopSpec(users=users, items=items, seed=seed, days=days, end=end), out)
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in summary.counts.items())
    click.echo(
        f"wrote {summary.events:,} events ({kinds}), {summary.triples:,} triples and "
        f"{len(summary.bots)} bot(s) to {out} in {summary.seconds:.2f}s "
        f"({summary.events_per_second:,.0f} events/s); load it with `kgrec import {out}`"
    )


@main.group()
def events() -> None:
    """Behaviour events."""


@events.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["rees46", "taobao", "csv", "movielens-tags"])
)
@click.option("--map", "mappings", multiple=True, help="Rename a CSV column: column=field.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write rejected rows (default: rejects-<file name>.csv).",
)
@click.option(
    "--batch-size", default=MAX_IMPORT_BATCH, show_default=True, type=click.IntRange(1, MAX_IMPORT_BATCH)
)
@click.pass_context
def events_import(
    ctx: click.Context, file: Path, fmt: str, mappings: tuple[str, ...], rejects: Path | None, batch_size: int
) -> None:
    """Import behaviour events from FILE (CSV, optionally gzipped) through the API's write path."""
    from kgrec.events.bulk import import_events, write_rejects

    mapping = {}
    for text in mappings:
        column, sep, target = text.partition("=")
        if not sep or not column or not target:
            raise click.BadParameter(f"{text!r} is not column=field", param_hint="--map")
        mapping[column] = target
    settings = _settings(ctx)
    rejects = rejects or Path(f"rejects-{file.name.split('.')[0]}.csv")
    check_rejects_path(rejects)
    with (
        graph_session(settings, apply_migrations=True) as gateway,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task(f"importing {file.name}", total=file.stat().st_size, rows=0)
        summary = import_events(
            gateway,
            file,
            fmt,
            settings,
            mapping=mapping,
            batch_size=batch_size,
            on_progress=lambda done, rows: progress.update(task, completed=done, rows=rows),
        )
    write_rejects(rejects, summary.rejected)
    console.print(
        f"{summary.rows:,} rows in {summary.seconds:.1f}s ({summary.events_per_second:,.0f}/s): "
        f"{summary.applied:,} applied, {summary.duplicates:,} duplicates, "
        + (f"{summary.erased:,} of erased users left out, " if summary.erased else "")
        + f"{len(summary.rejected):,} rejected"
        + (f" (see {rejects})" if summary.rejected else "")
    )


# --- learning -----------------------------------------------------------------


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of integers", param_hint="--k"
        ) from None
    if not ks or ks[0] < 1 or ks[-1] > MAX_EVAL_K:
        raise click.BadParameter(f"each k must be between 1 and {MAX_EVAL_K}", param_hint="--k")
    return ks


# The graph model's epoch cap, shared by train and evaluate.
epochs_option = click.option(
    "--epochs",
    default=40,
    show_default=True,
    type=click.IntRange(1, MAX_EPOCHS),
    help="Epoch cap of the graph model (early stopping on validation NDCG@10).",
)


@main.command("train")
@click.option("--sync", is_flag=True, help="Train in this process instead of enqueueing a job.")
@click.option("--wait", is_flag=True, help="Enqueue, then follow the job until it ends.")
@epochs_option
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N."
)
@click.option(
    "--variant",
    type=click.Choice(list(VARIANTS)),
    default="full",
    show_default=True,
    help="Which signals the model may use (see the README's ablations). The shop's graph is read as it "
    "is: with no-knowledge, brand and category names stay in the item text.",
)
@click.option(
    "--gate",
    is_flag=True,
    help="Activate it only if it scores at least as well as the active version (the promotion gate).",
)
@click.pass_context
def train_command(
    ctx: click.Context, sync: bool, wait: bool, epochs: int, seed: int, device: str, variant: str, gate: bool
) -> None:
    """Train a new model version from the graph and make it active (with --gate: if it is as good)."""
    settings = _settings(ctx)
    options = {"epochs": epochs, "seed": seed, "device": device, "variant": variant, "gate": gate}
    if sync:
        from workers.training.config import TrainConfig, for_variant
        from workers.training.job import start_training

        with graph_session(settings, apply_migrations=True) as gateway, _stages() as progress:
            summary = start_training(
                gateway,
                settings,
                for_variant(TrainConfig(epochs=epochs, seed=seed), variant),
                device=device,
                progress=progress,
                gate=gate,
            )
        click.echo(json.dumps(summary, default=str))
        return
    with graph_session(settings):  # in embedded mode, the graph server is also the broker
        client = job_queue.job_client(settings)
        job_id = job_queue.enqueue(client, job_queue.TRAIN, **options)
        click.echo(f"training job {job_id} enqueued; follow it at GET /v1/jobs/{job_id}")
        if wait:
            click.echo(json.dumps(_outcome(client, job_id, settings.train_queue), default=str))


@contextlib.contextmanager
def _stages() -> Iterator[Callable[[str, float], None]]:
    """A progress bar of named stages on stderr; yields ``progress(stage, fraction)`` to move it."""
    with Progress(
        TextColumn("{task.fields[stage]:<16}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("stages", total=1.0, stage="starting")
        yield lambda stage, fraction: bar.update(task, completed=fraction, stage=stage)


# How often --wait reads a job's state, and how long a job may stay queued before --wait asks
# whether any worker takes jobs from its queue.
WAIT_POLL_S = 1.0
WORKER_CHECK_AFTER_S = 3.0


def _consumed(client: Any, queue: str) -> bool:
    """Whether a worker answering within a second takes jobs from ``queue``."""
    with job_queue.answered(client):
        replies = client.control.inspect(timeout=1.0).active_queues() or {}
    return any(q.get("name") == queue for queues in replies.values() for q in queues or [])


def _outcome(client: Any, job_id: str, queue: str = "celery") -> Any:
    """Follow a job until it ends, its state changes on stderr; returns its result. A job that
    failed is one line naming it and its reason (a broker that cannot be reached is an error of its
    own, not the job's). With no worker on ``queue`` it says so once and keeps waiting; Ctrl-C stops
    the wait in one line, the job left queued or running."""
    started, shown, asked = time.monotonic(), "", False
    try:
        while True:
            with job_queue.answered(client):
                meta = client.backend.get_task_meta(job_id)
            state, value = meta["status"], meta.get("result")
            if state in states.READY_STATES:
                break
            stage = value.get("stage") if state == "PROGRESS" and isinstance(value, dict) else None
            now = f"{state.lower()}{f' ({stage})' if stage else ''}"
            if now != shown:
                click.echo(f"job {job_id}: {now}", err=True)
                shown = now
            if state == states.PENDING and not asked and time.monotonic() - started > WORKER_CHECK_AFTER_S:
                asked = True
                if not _consumed(client, queue):
                    click.echo(
                        f"no worker taking queue {queue!r} answered within 1 s (a busy solo-pool "
                        "worker cannot): if none runs, start one (`kgrec worker`, or `kgrec up`); "
                        "still waiting (Ctrl-C stops waiting, the job stays queued)",
                        err=True,
                    )
            time.sleep(WAIT_POLL_S)
    except KeyboardInterrupt:
        click.echo(f"kgrec: stopped waiting; job {job_id} goes on (GET /v1/jobs/{job_id})", err=True)
        sys.exit(130)
    if state in states.PROPAGATE_STATES or isinstance(value, BaseException):  # failed or revoked
        fail(f"job {job_id} {state.lower()}: {type(value).__name__}: {value}")
    return value


@main.command("update")
@click.option("--sync", is_flag=True, help="Run the partitions one after another in this process.")
@click.option("--wait", is_flag=True, help="Enqueue, then wait until the new version is published.")
@click.option(
    "--partitions",
    type=click.IntRange(1, 64),
    default=None,
    help="Partitions of the touched seeds (default KGREC_INCREMENTAL_PARTITIONS).",
)
@click.option("--since", type=int, default=None, help="Epoch ms: refresh what changed after this time.")
@click.pass_context
def update_command(
    ctx: click.Context, sync: bool, wait: bool, partitions: int | None, since: int | None
) -> None:
    """Incremental update: a child of the active version with the rows touched since it refreshed."""
    settings = _settings(ctx)
    if sync:
        from workers.training.incremental import run_incremental
        from workers.training.job import version_name

        with graph_session(settings, apply_migrations=True) as gateway:
            try:
                with _stages() as progress:
                    summary = run_incremental(
                        gateway,
                        settings,
                        version_name(),
                        partitions=partitions,
                        since=since,
                        progress=progress,
                    )
            except EXPECTED_ERRORS:
                raise
            except Exception as exc:  # one line, as --wait gives for a failed job
                fail(f"incremental update failed: {type(exc).__name__}: {exc}")
        click.echo(json.dumps(summary, default=str))
        return
    with graph_session(settings):  # in embedded mode, the graph server is also the broker
        client = job_queue.job_client(settings)
        options = {"partitions": partitions, "since": since}
        job_id = job_queue.enqueue(client, job_queue.INCREMENTAL_UPDATE, **options)
        click.echo(f"incremental update {job_id} enqueued")
        if wait:
            planned = _outcome(client, job_id)
            if planned.get("merge_job"):
                planned = _outcome(client, planned["merge_job"])
            click.echo(json.dumps(planned, default=str))


@main.command("evaluate")
@click.option(
    "--dataset",
    required=True,
    help="amazon-beauty, movielens, kgat-amazon-book, movielens-100k-freebase, or a folder (kgrec, "
    "KGAT/KGIN, KGCN/RippleNet, MovieLens or RecBole layout, recognised by its files).",
)
@datasets_dir_options
@click.option("--protocol", required=True, type=click.Choice(["leave-last-out", "given-split"]))
@click.option("--k", "k_text", default="10,20", show_default=True, help="Cut-offs, comma-separated.")
@click.option(
    "--variant",
    type=click.Choice(list(VARIANTS)),
    default="full",
    show_default=True,
    help="Which signals kgrec may use. interactions imports interactions only (no metadata, no text); "
    "no-knowledge imports items with their own text (title, description) and no brand, category or triple.",
)
@click.option(
    "--baselines",
    "baseline_set",
    default="default",
    show_default=True,
    help="default, all (adds SASRec, slow on CPU), kgrec (no baseline), or model keys separated by "
    "commas (e.g. markov,ease,sasrec; kgrec is always run).",
)
@click.option(
    "--ablate-topics",
    is_flag=True,
    help="Also report kgrec_no_topics: kgrec's blend refitted without the topic-interest signal.",
)
@epochs_option
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: model -> metrics, confidence, paired, protocol.",
)
@click.option(
    "--per-user",
    "per_user_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every model's per-user metrics to this .npz, to compare two runs user by user "
    "(python -m bench.paired_runs A.npz B.npz).",
)
@click.pass_context
def evaluate_command(
    ctx: click.Context,
    dataset: str,
    datasets_dir: Path | None,
    legacy_data_dir: Path | None,
    protocol: str,
    k_text: str,
    variant: str,
    baseline_set: str,
    ablate_topics: bool,
    epochs: int,
    seed: int,
    device: str,
    as_json: bool,
    per_user_path: Path | None,
) -> None:
    """Full-ranking evaluation of the served model and the baselines, in a scratch graph."""
    from workers.training.config import TrainConfig, for_variant
    from workers.training.evaluate import evaluate
    from workers.training.kg_model import resolve_device

    settings = _settings(ctx)
    ks = _ks(k_text)
    config = for_variant(TrainConfig(epochs=epochs, seed=seed), variant)
    with graph_session(settings):
        report = evaluate(
            settings,
            dataset,
            _datasets_dir(settings, datasets_dir, legacy_data_dir),
            protocol,
            ks,
            config,
            device=resolve_device(device),
            progress=lambda message: console.print(message),
            baseline_set=baseline_set,
            ablate_topics=ablate_topics,
        )
    if per_user_path is not None:
        report.save_per_user(per_user_path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **report.metrics,
                    "confidence": report.confidence,
                    "paired": report.paired,
                    "protocol": {**report.protocol, "variant": variant},
                },
                default=str,
            )
        )
        return
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]  # hit@k: in --json
    table = Table("model", *columns, f"ndcg@{ks[0]} 95% CI", f"kgrec − model ndcg@{ks[0]} (p)")
    key = f"ndcg@{ks[0]}"
    for name, values in report.metrics.items():
        low, high = report.confidence[name][key]
        pair = report.paired.get(name, {}).get(key)
        versus = f"{pair['diff']:+.4f} (p={pair['p']:.2g})" if pair else ""
        table.add_row(name, *(f"{values[c]:.4f}" for c in columns), f"[{low:.4f}, {high:.4f}]", versus)
    Console().print(table)
    click.echo(f"kgrec blend weights: {json.dumps(report.protocol['kgrec_weights'], default=str)}")
    click.echo(f"kgrec tuned signals: {json.dumps(report.protocol['kgrec_tuned_signals'], default=str)}")
    without_topics = report.protocol["models"].get("kgrec_no_topics")  # type: ignore[union-attr]
    if without_topics:
        click.echo(f"kgrec_no_topics blend weights: {json.dumps(without_topics['weights'], default=str)}")
    click.echo(json.dumps(report.protocol, default=str))


# --- the whole stack --------------------------------------------------------------


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1))
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the API with gunicorn (the graph must be reachable)."""
    from kgrec_cli.stack import check_port_free, gunicorn_command

    _warn_admin_scope(_settings(ctx))
    _check_sentences(_settings(ctx))
    check_port_free(port, host)  # gunicorn would log "Connection in use" every second, then give up
    command = gunicorn_command(host, port, workers, threads)
    os.execvp(command[0], command)


def _warn_admin_scope(settings: Settings) -> None:
    warning = admin_scope_warning(settings)
    if warning:
        click.echo(f"kgrec: warning: {warning}", err=True)


def _check_sentences(settings: Settings) -> None:
    # Each gunicorn worker loads them (kgrec.serving), where a bad file is a traceback per worker and
    # "Worker failed to boot": checked here first, it stops the command in one line.
    try:
        load_sentences(settings.relation_sentences)
    except SentenceTemplateError as exc:
        fail(exc)


def admin_scope_warning(settings: Settings) -> str | None:
    """What ``kgrec serve`` warns about once at start: API keys without an admin scope (None: nothing)."""
    if not settings.api_keys or settings.admin_keys:
        return None
    return (
        "KGREC_ADMIN_KEYS is not set, so every API key can erase users, list and export audiences and "
        "change the catalogue, rules, experiments and models; set it to the keys that may, and "
        "KGREC_ERASE_KEYS to a storefront's keys that may also erase users (README, "
        '"Operations: faults, privacy and security")'
    )


# How long `kgrec worker` and `kgrec beat` wait for the broker before saying it does not answer.
BROKER_CHECK_S = 5.0


def _check_broker(settings: Settings) -> None:
    """Fail in one line unless the Celery broker is known and answers, before ``exec`` of Celery
    (which printed a 41-line traceback for either). The job queue's own connection is asked, so
    the URL means here what it means to Celery (a ``rediss://`` query's ``ssl_cert_reqs``)."""
    try:
        app = job_queue.job_client(settings)
    except GraphUnavailable as exc:
        hint = "; start it with `kgrec db start`, or run the whole stack with `kgrec up`"
        fail(f"{exc}{hint if settings.embedded else ''}")
    bound = {"socket_timeout": BROKER_CHECK_S, "socket_connect_timeout": BROKER_CHECK_S}
    with app.connection_for_write(connect_timeout=BROKER_CHECK_S, transport_options=bound) as connection:
        try:
            connection.ensure_connection(max_retries=0)
        except OperationalError as exc:
            where = "the embedded graph server" if not settings.redis_url else "REDIS_URL"
            # as_uri() leaves the password out
            fail(f"the Celery broker ({where}, {connection.as_uri()}) does not answer: {exc}")


@main.command("worker")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1), help="Worker processes.")
@click.option(
    "--pool", default="prefork", show_default=True, type=click.Choice(["prefork", "solo", "threads"])
)
@click.option(
    "--queues",
    default=None,
    help=(
        "Comma-separated queues to take tasks from (default: the default queue, the training queue"
        " and kgrec up's kgrec-train)."
    ),
)
@click.pass_context
def worker_command(ctx: click.Context, concurrency: int, pool: str, queues: str | None) -> None:
    """Run a Celery worker (training, fold-in, pruning)."""
    names = queues or all_queues(_settings(ctx))
    for name in names.split(","):
        try:
            queue_name("--queues", name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--queues") from None
    _check_broker(_settings(ctx))
    command = worker_argv(concurrency, pool, names)
    os.execvpe(command[0], command, {**os.environ, **job_queue.WORKER_SHUTDOWN_ENV})


@main.command("beat")
@click.pass_context
def beat_command(ctx: click.Context) -> None:
    """Run the Celery beat scheduler: pruning, scheduled retraining, the fold-in sweep, the snapshot guard."""
    _check_broker(_settings(ctx))
    command = beat_argv(_settings(ctx))
    os.execvp(command[0], command)


@main.command("up")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="API port on 127.0.0.1."
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the embedded graph keeps its data (default KGREC_DATA_DIR or ./var).",
)
@click.option(
    "--datasets-dir",
    type=_FOLDER,
    default=None,
    help="Folder holding the data set --import reads (default KGREC_DATASETS_DIR or ../shared/data).",
)
@click.option(
    "--import",
    "import_name",
    default=None,
    help="Import this data set first if the graph holds no items yet.",
)
@click.option("--train", "train_first", is_flag=True, help="Train a model first if none is active.")
@click.pass_context
def up_command(
    ctx: click.Context,
    port: int,
    data_dir: Path | None,
    datasets_dir: Path | None,
    import_name: str | None,
    train_first: bool,
) -> None:
    """Run the graph server, impressions server, API, worker and beat in the foreground (one per data dir);
    Ctrl-C or SIGTERM stops everything, an import or a training included."""
    from kgrec_cli.stack import run_stack

    settings = _settings(ctx).with_overrides(data_dir=data_dir, datasets_dir=datasets_dir)
    _warn_admin_scope(settings)
    _check_sentences(settings)
    run_stack(settings, port, import_name, run_import_or_demo, train_first, import_record)


main.add_command(kg_group)
main.add_command(data_group)
main.add_command(items_group)


if __name__ == "__main__":
    main()
