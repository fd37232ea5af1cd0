"""``kgrec data fetch NAME``: get a built-in data set from the mirror or its public source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kgrec import data_fetch
from kgrec.config import Settings
from kgrec.data_fetch import LOCK_NAME, FetchError, FetchReport, default_mirror, fetch
from kgrec.datasets import BUILTIN
from kgrec_cli.failure import fail

_FOLDER = click.Path(file_okay=False, path_type=Path)


def _progress_factory(progress: Progress) -> Callable[[str, int | None], Callable[[int], None]]:
    def start(label: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(label, total=total)
        return lambda n: progress.advance(task, n)

    return start


def _summary(report: FetchReport) -> str:
    parts = [
        f"{len(names)} {what}"
        for what, names in (
            ("already present", report.present),
            ("copied from the mirror", report.from_mirror),
            ("installed from the network", report.installed),
        )
        if names
    ]
    if report.unverified:
        parts.append(f"{len(report.unverified)} of them not verified (no pinned digest)")
    return f"{report.dataset}: {', '.join(parts) or 'nothing to do'} in {report.folder}"


@click.group()
def data() -> None:
    """Get the built-in data sets (URLs and SHA-256 digests pinned in kgrec/data_sources.toml)."""


@data.command("fetch")
@click.argument("name", type=click.Choice(sorted(BUILTIN)))
@click.option(
    "--datasets-dir",
    type=_FOLDER,
    default=None,
    help="Folder to put the data set in (default KGREC_DATASETS_DIR or ../shared/data).",
)
@click.option(
    "--mirror",
    type=_FOLDER,
    default=None,
    help="Folder of data set copies used before the network "
    "(default KGREC_DATASETS_MIRROR, KGREC_SHARED_DATA_DIR or ../shared/data beside the repository).",
)
@click.option("--no-mirror", is_flag=True, help="Always download from the public source.")
@click.option(
    "--trust-on-first-use",
    is_flag=True,
    help=f"Accept files with no pinned digest and record theirs in <datasets dir>/{LOCK_NAME}.",
)
@click.option("--force", is_flag=True, help="Fetch again even the files already in place.")
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True, help="Seconds.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Times an interrupted download is resumed before giving up (a later run resumes too).",
)
@click.pass_context
def fetch_command(
    ctx: click.Context,
    name: str,
    datasets_dir: Path | None,
    mirror: Path | None,
    no_mirror: bool,
    trust_on_first_use: bool,
    force: bool,
    timeout: float,
    retries: int,
) -> None:
    """Download data set NAME into the datasets dir, so that `kgrec import NAME` works.

    Files already there are kept when they verify; a mirror copy is used first; every file is
    checked against its pinned SHA-256 before it is moved into place; an interrupted download
    resumes on the next run.
    """
    try:
        settings = (ctx.obj or {}).get("settings") or Settings.from_env()
        target = datasets_dir or settings.datasets_dir
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            # Bars only on a terminal, and gone when done: what stays is the summary (or one error line).
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            report = fetch(
                name,
                target,
                mirror=None if no_mirror else (mirror or settings.datasets_mirror or default_mirror()),
                trust_on_first_use=trust_on_first_use,
                force=force,
                progress=_progress_factory(progress),
                log=lambda line: progress.console.print(line, markup=False, highlight=False),
                timeout=timeout,
                retries=retries,
            )
    except (FetchError, OSError, ValueError) as exc:
        fail(exc)
    for file_name, digest in report.recorded.items():
        click.echo(
            f"recorded {file_name} sha256={digest} (pin it in {data_fetch.SOURCES_FILE.name} once verified)"
        )
    if report.conversion is not None:
        c = report.conversion
        skipped = f", skipped: {c.skipped}" if c.skipped else ""
        click.echo(
            f"converted: {c.users} users, {c.items} items, {c.interactions} interactions, "
            f"triples {c.triples}{skipped}"
        )
    for file_name, reason in report.skipped.items():
        click.echo(f"{file_name}: not fetched: {reason}", err=True)
    click.echo(_summary(report))
