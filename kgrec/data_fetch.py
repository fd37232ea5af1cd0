"""Get the built-in data sets onto a fresh machine: from a local mirror first, else from their public source.

Every URL and SHA-256 digest is pinned in ``kgrec/data_sources.toml`` (its header explains the
fields and where each digest came from). A fetch:

1. keeps the files already in ``<datasets dir>/<folder>`` that verify (``--force`` refetches them);
2. copies missing files from the mirror (``KGREC_DATASETS_MIRROR``, else ``KGREC_SHARED_DATA_DIR``,
   else ``../shared/data`` beside the repository) when it holds the data set's folder;
3. downloads the rest into ``<datasets dir>/.downloads/<name>/``, resuming an interrupted download
   from its ``.part`` file with an HTTP ``Range`` request, then extracts (zip) or converts
   (:mod:`kgrec.datasets.amazon2014`) into the folder.

A file is moved into place only once its digest matches the pin; a mismatch removes it and
raises :class:`FetchError`. A file with no pinned digest is refused unless ``trust_on_first_use``,
which records its digest in ``<datasets dir>/kgrec-data-lock.json``, enforced from then on. A download
whose own digest is not pinned but whose every extracted file is pinned is accepted (its output is
verified file by file).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from kgrec.datasets import amazon2014

SOURCES_FILE = Path(__file__).with_name("data_sources.toml")
LOCK_NAME = "kgrec-data-lock.json"
DOWNLOADS_DIR = ".downloads"
CHUNK = 1 << 16
_DIGEST = re.compile(r"[0-9a-f]{64}")
CONVERTERS = ("amazon2014",)

# (label, total bytes or None) -> a callback taking the number of bytes just done.
ProgressFactory = Callable[[str, int | None], Callable[[int], None]]


class FetchError(Exception):
    """A fetch that cannot go on, with a one-line reason a person can act on."""


@dataclass(frozen=True)
class Source:
    """One file downloaded from the network."""

    name: str
    url: str
    sha256: str
    extract: tuple[str, ...] = ()
    # True: the data set imports without it; unpinned and not trusted, it is skipped with a note.
    optional: bool = False

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the files this download installs (for a converted data set: none by itself)."""
        return tuple(PurePosixPath(m).name for m in self.extract) if self.extract else (self.name,)


@dataclass(frozen=True)
class DataSource:
    """A built-in data set: where its files come from and their pinned digests."""

    name: str
    folder: str
    sources: tuple[Source, ...]
    files: dict[str, str]
    mirror_files: dict[str, str]
    convert: str | None = None
    # True: its reader needs uncompressed files, so a gzipped mirror copy is installed gunzipped.
    plain: bool = False


@dataclass
class FetchReport:
    """What a fetch did, file by file."""

    dataset: str
    folder: Path
    present: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # present, but no digest pinned to check them by
    from_mirror: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # optional download -> why it was not fetched
    conversion: amazon2014.ConversionSummary | None = None


def _pins(entries: list[dict[str, str]], where: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for entry in entries:
        name, digest = entry.get("name"), entry.get("sha256", "")
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"{where}: name {name!r} is not a plain file name")
        if digest and not _DIGEST.fullmatch(digest):
            raise ValueError(f"{where}: sha256 {digest!r} of {name} is not 64 lower-case hex digits")
        pins[name] = digest
    return pins


def load_sources(path: Path | None = None) -> dict[str, DataSource]:
    """The data sets pinned in ``path`` (default :data:`SOURCES_FILE`); bad entries raise ValueError."""
    path = path or SOURCES_FILE
    with open(path, "rb") as handle:
        table = tomllib.load(handle).get("datasets", {})
    result: dict[str, DataSource] = {}
    for name, spec in table.items():
        where = f"{path.name} [datasets.{name}]"
        try:
            result[name] = _data_source(name, spec, where)
        except KeyError as exc:
            raise ValueError(f"{where}: missing field {exc}") from None
    return result


def _data_source(name: str, spec: dict[str, Any], where: str) -> DataSource:
    """One ``[datasets.NAME]`` table as a :class:`DataSource`."""
    sources = tuple(
        Source(
            name=s["name"],
            url=s["url"],
            sha256=s.get("sha256", ""),
            extract=tuple(s.get("extract", ())),
            optional=bool(s.get("optional", False)),
        )
        for s in spec.get("sources", ())
    )
    _pins([{"name": s.name, "sha256": s.sha256} for s in sources], where)
    convert = spec.get("convert")
    if convert is not None and convert not in CONVERTERS:
        raise ValueError(f"{where}: convert {convert!r} is not one of {', '.join(CONVERTERS)}")
    return DataSource(
        name=name,
        folder=spec["folder"],
        sources=sources,
        files=_pins(spec.get("files", []), where),
        mirror_files=_pins(spec.get("mirror_files", []), where),
        convert=convert,
        plain=bool(spec.get("plain", False)),
    )


def default_mirror() -> Path:
    """The mirror when Settings.datasets_mirror is unset: ``../shared/data`` beside the repository."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# --- digests and the lock file ----------------------------------------------------------------


def _read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in _read_chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """SHA-256 of a file's content: of the gunzipped bytes for ``*.gz``, else of the file."""
    if path.suffix != ".gz":
        return file_sha256(path)
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as handle:
        for chunk in _read_chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()


class Lock:
    """Digests recorded by ``--trust-on-first-use`` (``<datasets dir>/kgrec-data-lock.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.digests: dict[str, dict[str, str]] = json.loads(path.read_text())
        except FileNotFoundError:
            self.digests = {}
        except ValueError as exc:
            raise FetchError(f"{path}: not a valid lock file ({exc}); fix or remove it") from None

    def get(self, dataset: str, name: str) -> str:
        """The recorded digest of ``name``, or ""."""
        return self.digests.get(dataset, {}).get(name, "")

    def record(self, dataset: str, name: str, digest: str) -> None:
        """Record a digest and save the file (atomically)."""
        self.digests.setdefault(dataset, {})[name] = digest
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps(self.digests, indent=2, sort_keys=True) + "\n")
        partial.replace(self.path)


def _mismatch(name: str, expected: str, actual: str) -> FetchError:
    return FetchError(f"{name}: SHA-256 mismatch: expected {expected}, got {actual}; refused, not installed")


# --- network -------------------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _unreachable(url: str, reason: object, folder: Path) -> FetchError:
    host = urlparse(url).hostname or url
    return FetchError(
        f"cannot reach {host} ({reason}): offline? Set KGREC_DATASETS_MIRROR to a folder holding "
        f"{folder.name}/, or copy its files there by hand"
    )


def _download_once(
    url: str, part: Path, label: str, progress: ProgressFactory | None, timeout: float, folder: Path
) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "kgrec-data-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset:
            return  # the .part is already whole: its digest decides
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except URLError as exc:
        raise _unreachable(url, exc.reason, folder) from None
    except (TimeoutError, ConnectionError) as exc:
        raise _unreachable(url, exc, folder) from None
    with response:
        resumed = offset > 0 and response.status == 206
        if resumed and not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
            resumed = False
        if not resumed:
            offset = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        advance = progress(label, total) if progress else (lambda n: None)
        advance(offset)
        written = offset
        try:
            with open(part, "ab" if resumed else "wb") as out:
                for chunk in _read_chunks(response):
                    out.write(chunk)
                    written += len(chunk)
                    advance(len(chunk))
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            raise _Interrupted(f"{type(exc).__name__}") from None
        if total is not None and written < total:
            raise _Interrupted(f"connection closed at byte {written} of {total}")


def download(
    url: str,
    dest: Path,
    expected: str,
    *,
    folder: Path,
    progress: ProgressFactory | None = None,
    retries: int = 2,
    timeout: float = 30.0,
) -> str:
    """Download ``url`` to ``dest`` (via ``dest.part``, resumed if present); returns its SHA-256.

    With ``expected`` set, a mismatching file is deleted and FetchError raised; ``dest`` then does
    not exist. An interrupted download keeps its ``.part`` for the next attempt (``retries`` more
    within this call, then FetchError asking to run again).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, dest.name, progress, timeout, folder)
            break
        except _Interrupted as exc:
            if attempt == retries:
                done = part.stat().st_size if part.exists() else 0
                raise FetchError(
                    f"download of {dest.name} from {urlparse(url).hostname} interrupted after {done} bytes "
                    f"({exc}); run the command again to resume"
                ) from None
    actual = file_sha256(part)
    if expected and actual != expected:
        part.unlink()
        raise _mismatch(dest.name, expected, actual)
    part.replace(dest)
    return actual


# --- installing ----------------------------------------------------------------------------------


def _copy_verified(
    source: BinaryIO,
    target: Path,
    name: str,
    expected: str,
    total: int | None,
    progress: ProgressFactory | None,
) -> str:
    """Copy a stream to ``target`` via ``target.part``; digest of the bytes copied (mismatch: refused)."""
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    advance = progress(name, total) if progress else (lambda n: None)
    with open(part, "wb") as out:
        for chunk in _read_chunks(source):
            out.write(chunk)
            digest.update(chunk)
            advance(len(chunk))
    actual = digest.hexdigest()
    if expected and actual != expected:
        part.unlink()
        raise _mismatch(name, expected, actual)
    part.replace(target)
    return actual


def _copy_from_mirror(
    src: Path, folder: Path, name: str, expected: str, plain: bool, progress: ProgressFactory | None
) -> str:
    """Copy a mirror file, as it is or (``plain``) gunzipped, checking the digest of its content."""
    if plain and src.suffix == ".gz":
        with gzip.open(src, "rb") as handle:
            return _copy_verified(handle, folder / name, str(src), expected, None, progress)
    actual = content_sha256(src)
    if expected and actual != expected:
        raise _mismatch(str(src), expected, actual)
    with open(src, "rb") as handle:
        _copy_verified(handle, folder / src.name, src.name, "", src.stat().st_size, progress)
    return actual


def _zip_member(archive: zipfile.ZipFile, wanted: str) -> zipfile.ZipInfo:
    names = {info.filename: info for info in archive.infolist() if not info.is_dir()}
    if wanted in names:
        return names[wanted]
    base = PurePosixPath(wanted).name
    for info in names.values():
        if PurePosixPath(info.filename).name == base and not info.filename.startswith("__MACOSX/"):
            return info
    raise FetchError(f"{archive.filename}: has no member {wanted}")


def _present(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class _Fetch:
    """One fetch of one data set (see :func:`fetch`)."""

    def __init__(
        self,
        spec: DataSource,
        datasets_dir: Path,
        trust_on_first_use: bool,
        progress: ProgressFactory | None,
        log: Callable[[str], None],
        retries: int,
        timeout: float,
    ) -> None:
        self.spec = spec
        self.folder = datasets_dir / spec.folder
        self.downloads = datasets_dir / DOWNLOADS_DIR / spec.name
        self.lock = Lock(datasets_dir / LOCK_NAME)
        self.trust = trust_on_first_use
        self.progress = progress
        self.log = log
        self.retries = retries
        self.timeout = timeout
        self.report = FetchReport(dataset=spec.name, folder=self.folder)

    def pin(self, name: str) -> str:
        """The pinned digest of an installed file or a download: data_sources.toml, then the lock file."""
        pinned = self.spec.files.get(name) or next(
            (s.sha256 for s in self.spec.sources if s.name == name and s.sha256), ""
        )
        return pinned or self.lock.get(self.spec.name, name)

    def trust_new(self, name: str, digest: str) -> None:
        """Accept an unpinned file (only reached with trust-on-first-use) and record it."""
        self.lock.record(self.spec.name, name, digest)
        self.report.recorded[name] = digest
        self.log(f"{name}: no pinned SHA-256; trusted on first use, recorded {digest} in {self.lock.path}")

    def keep_present(self, force: bool) -> list[str]:
        """Names still missing after checking the files already in the folder."""
        missing = []
        for name in self.spec.files:
            path = _present(self.folder, name)
            if path is None or force:
                missing.append(name)
                continue
            expected = self.pin(name)
            if not expected:
                self.report.unverified.append(name)
            else:
                actual = content_sha256(path)
                if actual != expected:
                    raise FetchError(
                        f"{path}: SHA-256 mismatch: expected {expected}, got {actual}; "
                        "remove it or rerun with --force"
                    )
            self.report.present.append(name)
        return missing

    def from_mirror(self, mirror: Path, missing: list[str]) -> list[str]:
        """Copy what the mirror holds; returns the names still missing."""
        pins = self.spec.mirror_files or self.spec.files
        still = []
        for name in missing:
            src = _present(mirror, name) if name in pins else None
            if src is None:
                still.append(name)
                continue
            expected = pins[name] if self.spec.mirror_files else self.pin(name)
            if not expected and not self.trust:
                raise self.refuse_unpinned(str(src))
            self.folder.mkdir(parents=True, exist_ok=True)
            actual = _copy_from_mirror(src, self.folder, name, expected, self.spec.plain, self.progress)
            if not expected:
                self.trust_new(name, actual)
            self.report.from_mirror.append(name)
        return still

    def needed_sources(self, missing: list[str]) -> list[Source]:
        if self.spec.convert:
            return list(self.spec.sources)
        return [s for s in self.spec.sources if set(s.outputs) & set(missing)]

    def accepted_unpinned(self, source: Source) -> bool:
        """True when a download needs no digest of its own: every file it yields is pinned."""
        return bool(source.extract) and not self.spec.convert and all(self.pin(o) for o in source.outputs)

    def from_network(self, missing: list[str]) -> None:
        sources = self.needed_sources(missing)
        refused = [
            s for s in sources if not self.trust and not self.pin(s.name) and not self.accepted_unpinned(s)
        ]
        if refused and self.spec.convert:
            raise self.refuse_unpinned(" and ".join(s.name for s in refused))
        for source in [s for s in refused if s.optional]:
            self.report.skipped[source.name] = (
                "no pinned SHA-256; rerun with --trust-on-first-use to fetch it and record its digest"
            )
        refused = [s for s in refused if not s.optional]
        sources = [s for s in sources if s not in refused and s.name not in self.report.skipped]
        self.folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for source in sources:
            path = self.downloads / source.name
            expected = self.pin(source.name)
            if path.is_file() and (not expected or file_sha256(path) == expected):
                self.log(f"{source.name}: already downloaded")
            else:
                path.unlink(missing_ok=True)
                actual = download(
                    source.url,
                    path,
                    expected,
                    folder=self.folder,
                    progress=self.progress,
                    retries=self.retries,
                    timeout=self.timeout,
                )
                self.report.downloaded.append(source.name)
                if not expected and not self.accepted_unpinned(source):
                    self.trust_new(source.name, actual)
            paths[source.name] = path
            if source.extract:
                self.extract(source, path, missing)
            elif not self.spec.convert:
                # Verified by download() (or above, when already downloaded) against the same pin.
                path.replace(self.folder / source.name)
                self.report.installed.append(source.name)
        if self.spec.convert:
            self.convert(paths)
        if refused:
            # The pinned files are in place; only the unpinned ones wait for a decision.
            raise self.refuse_unpinned(", ".join(s.name for s in refused))

    def refuse_unpinned(self, name: str) -> FetchError:
        """The one-line refusal of a file with no pinned digest."""
        return FetchError(
            f"{name}: no pinned SHA-256 in {SOURCES_FILE.name} or {self.lock.path}; rerun with "
            "--trust-on-first-use to accept it as downloaded and record its digest"
        )

    def extract(self, source: Source, path: Path, missing: list[str]) -> None:
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            path.unlink()
            raise FetchError(f"{source.name}: not a zip file ({exc}); removed, run again") from None
        with archive:
            for member in source.extract:
                name = PurePosixPath(member).name
                if name not in missing:
                    continue
                info = _zip_member(archive, member)
                expected = self.pin(name)
                with archive.open(info) as handle:
                    actual = _copy_verified(
                        handle, self.folder / name, name, expected, info.file_size, self.progress
                    )
                if not expected:
                    self.trust_new(name, actual)
                self.report.installed.append(name)

    def convert(self, paths: dict[str, Path]) -> None:
        reviews = next(p for n, p in paths.items() if n.startswith("reviews_"))
        meta = next(p for n, p in paths.items() if n.startswith("meta_"))
        self.log(f"converting {reviews.name} and {meta.name} into {self.folder}")
        self.report.conversion = amazon2014.convert(reviews, meta, self.folder)
        self.report.installed.extend(f"{name}.gz" for name in self.spec.files)


def fetch(
    name: str,
    datasets_dir: Path,
    *,
    mirror: Path | None = None,
    trust_on_first_use: bool = False,
    force: bool = False,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] = lambda line: None,
    retries: int = 2,
    timeout: float = 30.0,
    sources: dict[str, DataSource] | None = None,
) -> FetchReport:
    """Put built-in data set ``name`` into ``datasets_dir`` (see the module docstring for the order).

    ``mirror`` None: no mirror. Raises FetchError with a one-line reason on any refusal or failure.
    """
    specs = load_sources() if sources is None else sources
    if name not in specs:
        raise FetchError(f"unknown data set {name!r}; one of: {', '.join(sorted(specs))}")
    job = _Fetch(specs[name], Path(datasets_dir), trust_on_first_use, progress, log, retries, timeout)
    missing = job.keep_present(force)
    mirror_folder = mirror / job.spec.folder if mirror is not None else None
    if (
        missing
        and mirror_folder is not None
        and mirror_folder.is_dir()
        and mirror_folder.resolve() != job.folder.resolve()
    ):
        missing = job.from_mirror(mirror_folder, missing)
    if missing:
        job.from_network(missing)
    return job.report
