"""``kgrec data fetch``: pinned digests, resume, offline, mirror first, and the Amazon 2014 converter.

Files are served by a local HTTP server (with Range support) in a thread, never from the internet;
the pinned-sources file is replaced by one that points at that server.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from graph_schema.statements import admin
from kgrec import data_fetch
from kgrec.config import Settings
from kgrec.data_fetch import FetchError, content_sha256, fetch, load_sources
from kgrec.datasets import BUILTIN, open_dataset
from kgrec.datasets.amazon2014 import convert
from kgrec.datasets.layout import LayoutDataset
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec_cli.data import data

FIXTURES = Path(__file__).parent / "fixtures" / "amazon2014"


def sha(data_bytes: bytes) -> str:
    return hashlib.sha256(data_bytes).hexdigest()


class FileServer:
    """Serves ``files`` (path -> bytes); can drop a connection once after N bytes; logs every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes=") : -1])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                self.wfile.write(body[start:] if cut is None else body[start : start + cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FileServer]:
    running = FileServer()
    yield running
    running.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_sources(path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.write_text(text)
    monkeypatch.setattr(data_fetch, "SOURCES_FILE", path)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


RATINGS = b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,5.0,964983000\n"
MOVIES = b'movieId,title,genres\n1,Toy Story (1995),Animation|Children\n3,"Heat, The (1995)",Action\n'


def movielens_sources(url: str, ratings_digest: str) -> str:
    return f"""
[datasets.movielens]
folder = "movielens-ml-latest-small"
plain = true
[[datasets.movielens.sources]]
name = "ml-latest-small.zip"
url = "{url}/ml-latest-small.zip"
sha256 = ""
extract = ["ml-latest-small/ratings.csv", "ml-latest-small/movies.csv"]
[[datasets.movielens.files]]
name = "ratings.csv"
sha256 = "{ratings_digest}"
[[datasets.movielens.files]]
name = "movies.csv"
sha256 = "{sha(MOVIES)}"
"""


TRAIN = b"".join(f"{u} {' '.join(str(i) for i in range(u, u + 40))}\n".encode() for u in range(300))
TEST = b"0 5\n1 7\n2 9\n"
KG = b"0 0 100\n1 1 101\n"


def kgat_sources(url: str, kg_zip_digest: str = "", optional: bool = False) -> str:
    return f"""
[datasets.kgat-amazon-book]
folder = "kgat-amazon-book"
[[datasets.kgat-amazon-book.sources]]
name = "train.txt"
url = "{url}/Data/amazon-book/train.txt"
sha256 = "{sha(TRAIN)}"
[[datasets.kgat-amazon-book.sources]]
name = "test.txt"
url = "{url}/Data/amazon-book/test.txt"
sha256 = "{sha(TEST)}"
[[datasets.kgat-amazon-book.sources]]
name = "kg_final.txt.zip"
url = "{url}/Data/amazon-book/kg_final.txt.zip"
sha256 = "{kg_zip_digest}"
extract = ["kg_final.txt"]
optional = {str(optional).lower()}
[[datasets.kgat-amazon-book.files]]
name = "train.txt"
sha256 = "{sha(TRAIN)}"
[[datasets.kgat-amazon-book.files]]
name = "test.txt"
sha256 = "{sha(TEST)}"
[[datasets.kgat-amazon-book.files]]
name = "kg_final.txt"
sha256 = ""
"""


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(data, list(args), obj={"settings": Settings.from_env({})})
    return result.exit_code, result.stdout, result.stderr


# --- the pinned file ------------------------------------------------------------------------------


def test_pinned_sources_cover_every_builtin_data_set() -> None:
    sources = load_sources()
    assert set(sources) == set(BUILTIN)
    for name, spec in sources.items():
        assert spec.folder == BUILTIN[name]
        assert spec.sources and all(s.url.startswith(("https://", "http://")) for s in spec.sources)
    # The digests verified against local copies are pinned; the raw sources with no copy are not.
    assert all(sources["movielens"].files.values())
    assert sources["amazon-beauty"].convert == "amazon2014"
    assert not any(s.sha256 for s in sources["amazon-beauty"].sources)
    # Without a converter, the downloads install exactly the pinned files.
    for spec in sources.values():
        if not spec.convert:
            assert {name for s in spec.sources for name in s.outputs} == set(spec.files), spec.name
    # The Freebase graph comes out of a wheel on PyPI, pinned whole and file by file.
    freebase = sources["movielens-100k-freebase"]
    assert freebase.sources[0].sha256 and all(freebase.files.values())


def test_pinned_digests_match_the_local_copies(shared_data: Path) -> None:
    checked = 0
    for spec in load_sources().values():
        pins = {**spec.files, **spec.mirror_files} if not spec.convert else spec.mirror_files
        for name, digest in pins.items():
            for candidate in (shared_data / spec.folder / name, shared_data / spec.folder / f"{name}.gz"):
                if digest and candidate.is_file():
                    assert content_sha256(candidate) == digest, candidate
                    checked += 1
    assert checked == 5 + 6 + 3


# --- downloads --------------------------------------------------------------------------------------


def test_checksum_mismatch_is_refused_and_nothing_is_left_in_place(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = sha(RATINGS)
    tampered = RATINGS + b"999,999999,5.0,1493846415\n"
    server.files["/ml-latest-small.zip"] = zip_bytes(
        {"ml-latest-small/ratings.csv": tampered, "ml-latest-small/movies.csv": MOVIES}
    )
    write_sources(tmp_path / "sources.toml", movielens_sources(server.url, pinned), monkeypatch)
    target = tmp_path / "datasets"

    code, _, err = run_cli("fetch", "movielens", "--datasets-dir", str(target), "--no-mirror")

    assert code == 1
    assert err.strip().splitlines() == [
        f"kgrec: error: ratings.csv: SHA-256 mismatch: expected {pinned}, got {sha(tampered)}; "
        "refused, not installed"
    ]
    folder = target / "movielens-ml-latest-small"
    assert not (folder / "ratings.csv").exists()
    assert not list(folder.glob("*.part"))


def test_a_plain_download_with_the_wrong_digest_is_removed(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/Data/amazon-book/train.txt"] = TRAIN.replace(b"\n0 ", b"\n9 ", 1) + b"x"
    server.files["/Data/amazon-book/test.txt"] = TEST
    sources = load_sources(write_sources(tmp_path / "s.toml", kgat_sources(server.url), monkeypatch))
    with pytest.raises(FetchError, match=r"^train\.txt: SHA-256 mismatch: expected [0-9a-f]{64}, got"):
        fetch("kgat-amazon-book", tmp_path / "d", sources=sources, retries=0)
    assert not (tmp_path / "d" / "kgat-amazon-book" / "train.txt").exists()
    assert not list((tmp_path / "d").rglob("train.txt*"))


def test_an_interrupted_download_resumes_from_its_part_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/Data/amazon-book/train.txt"] = TRAIN
    server.files["/Data/amazon-book/test.txt"] = TEST
    server.files["/Data/amazon-book/kg_final.txt.zip"] = zip_bytes({"kg_final.txt": KG})
    server.drop_after["/Data/amazon-book/train.txt"] = 5_000
    write_sources(
        tmp_path / "s.toml", kgat_sources(server.url, sha(zip_bytes({"kg_final.txt": KG}))), monkeypatch
    )
    target = tmp_path / "datasets"
    args = ("fetch", "kgat-amazon-book", "--datasets-dir", str(target), "--no-mirror", "--retries", "0")

    code, _, err = run_cli(*args)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(
        r"kgrec: error: download of train\.txt from 127\.0\.0\.1 interrupted after 5000 bytes "
        r"\(.+\); run the command again to resume",
        err.strip(),
    )
    part = target / ".downloads" / "kgat-amazon-book" / "train.txt.part"
    assert part.stat().st_size == 5_000

    code, out, err = run_cli(*args)
    assert code == 0, err
    assert ("/Data/amazon-book/train.txt", "bytes=5000-") in server.requests
    installed = target / "kgat-amazon-book" / "train.txt"
    assert sha(installed.read_bytes()) == sha(TRAIN)
    assert not part.exists()
    assert "kgat-amazon-book:" in out
    # kg_final.txt came out of the zip (pinned by the zip's digest here), and the folder imports.
    assert (target / "kgat-amazon-book" / "kg_final.txt").read_bytes() == KG
    dataset = open_dataset("kgat-amazon-book", target)
    assert sum(1 for _ in dataset.interactions()) == 300 * 40 + 3


def test_one_run_resumes_by_itself_when_retries_are_left(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/Data/amazon-book/train.txt"] = TRAIN
    server.files["/Data/amazon-book/test.txt"] = TEST
    server.drop_after["/Data/amazon-book/train.txt"] = 7_000
    sources = load_sources(
        write_sources(tmp_path / "s.toml", kgat_sources(server.url, optional=True), monkeypatch)
    )

    report = fetch("kgat-amazon-book", tmp_path / "d", sources=sources, retries=1)

    assert ("/Data/amazon-book/train.txt", "bytes=7000-") in server.requests
    assert report.installed == ["train.txt", "test.txt"]
    assert content_sha256(tmp_path / "d" / "kgat-amazon-book" / "train.txt") == sha(TRAIN)


def test_an_offline_machine_gets_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    write_sources(tmp_path / "s.toml", movielens_sources(url, sha(RATINGS)), monkeypatch)

    code, out, err = run_cli("fetch", "movielens", "--datasets-dir", str(tmp_path / "d"), "--no-mirror")

    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kgrec: error: cannot reach 127.0.0.1 (")
    assert "offline?" in lines[0]
    assert "Traceback" not in err + out


def test_unpinned_files_need_trust_on_first_use_which_records_them(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/Data/amazon-book/train.txt"] = TRAIN
    server.files["/Data/amazon-book/test.txt"] = TEST
    server.files["/Data/amazon-book/kg_final.txt.zip"] = zip_bytes({"kg_final.txt": KG})
    write_sources(tmp_path / "s.toml", kgat_sources(server.url), monkeypatch)
    target = tmp_path / "datasets"
    base = ("fetch", "kgat-amazon-book", "--datasets-dir", str(target), "--no-mirror")

    code, _, err = run_cli(*base)
    assert code == 1
    assert "kg_final.txt.zip: no pinned SHA-256" in err and "--trust-on-first-use" in err
    # The pinned files are in place; the unpinned one was never downloaded.
    assert (target / "kgat-amazon-book" / "train.txt").is_file()
    assert not (target / "kgat-amazon-book" / "kg_final.txt").exists()
    assert all("kg_final" not in path for path, _ in server.requests)

    code, out, err = run_cli(*base, "--trust-on-first-use")
    assert code == 0, err
    lock = (target / data_fetch.LOCK_NAME).read_text()
    assert sha(zip_bytes({"kg_final.txt": KG})) in lock and sha(KG) in lock
    assert f"recorded kg_final.txt sha256={sha(KG)}" in out

    # From then on the recorded digest is enforced: a changed file upstream is refused.
    server.files["/Data/amazon-book/kg_final.txt.zip"] = zip_bytes({"kg_final.txt": KG + b"2 2 102\n"})
    shutil.rmtree(target / ".downloads")
    code, _, err = run_cli(*base, "--force")
    assert code == 1
    assert "kg_final.txt.zip: SHA-256 mismatch" in err
    assert (target / "kgat-amazon-book" / "kg_final.txt").read_bytes() == KG


def test_an_optional_unpinned_file_is_skipped_with_a_note(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/Data/amazon-book/train.txt"] = TRAIN
    server.files["/Data/amazon-book/test.txt"] = TEST
    write_sources(tmp_path / "s.toml", kgat_sources(server.url, optional=True), monkeypatch)
    target = tmp_path / "datasets"

    code, out, err = run_cli("fetch", "kgat-amazon-book", "--datasets-dir", str(target), "--no-mirror")

    assert code == 0, err
    assert "kg_final.txt.zip: not fetched: no pinned SHA-256" in err
    assert "2 installed from the network" in out
    assert all("kg_final" not in path for path, _ in server.requests)


def test_the_mirror_is_used_first(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sources(tmp_path / "s.toml", movielens_sources(server.url, sha(RATINGS)), monkeypatch)
    mirror = tmp_path / "mirror" / "movielens-ml-latest-small"
    mirror.mkdir(parents=True)
    with gzip.open(mirror / "ratings.csv.gz", "wb") as handle:
        handle.write(RATINGS)
    (mirror / "movies.csv").write_bytes(MOVIES)
    target = tmp_path / "datasets"

    code, out, err = run_cli(
        "fetch", "movielens", "--datasets-dir", str(target), "--mirror", str(mirror.parent)
    )

    assert code == 0, err
    assert server.requests == []
    assert "2 copied from the mirror" in out
    folder = target / "movielens-ml-latest-small"
    assert (folder / "ratings.csv").read_bytes() == RATINGS  # gunzipped: the MovieLens reader needs it
    assert sum(1 for _ in open_dataset("movielens", target).interactions()) == 3

    # A second run finds everything in place; a bad mirror copy is refused, not installed.
    code, out, _ = run_cli(
        "fetch", "movielens", "--datasets-dir", str(target), "--mirror", str(mirror.parent)
    )
    assert code == 0 and "2 already present" in out
    (mirror / "movies.csv").write_bytes(MOVIES + b"4,Extra (1999),Drama\n")
    other = tmp_path / "other"
    code, _, err = run_cli("fetch", "movielens", "--datasets-dir", str(other), "--mirror", str(mirror.parent))
    assert code == 1 and "movies.csv: SHA-256 mismatch" in err
    assert not (other / "movielens-ml-latest-small" / "movies.csv").exists()


# --- Amazon 2014 ------------------------------------------------------------------------------------


def read_gzip_csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_amazon2014_converter_writes_the_kgrec_layout(tmp_path: Path) -> None:
    summary = convert(FIXTURES / "reviews_Beauty_5.json", FIXTURES / "meta_Beauty.json", tmp_path)

    assert [
        (r["user_id"], r["item_id"], r["seq_index"]) for r in read_gzip_csv(tmp_path / "interactions.csv.gz")
    ] == [
        ("A1USERALPHA", "B000CREAM2", "0"),
        ("A1USERALPHA", "B000BRUSH1", "1"),  # same day as the soap: ASIN order
        ("A1USERALPHA", "B000SOAP03", "2"),
        ("A2USERBETA", "B000BRUSH1", "0"),  # the later repeat review is dropped
        ("A2USERBETA", "B000SOAP03", "1"),
        ("A3USERGAMMA", "B000NOMETA", "0"),
        ("A3USERGAMMA", "B000CREAM2", "1"),
    ]
    items = {r["item_id"]: r for r in read_gzip_csv(tmp_path / "items.csv.gz")}
    assert set(items) == {"B000BRUSH1", "B000CREAM2", "B000SOAP03", "B000NOMETA"}
    assert items["B000BRUSH1"] == {
        "item_id": "B000BRUSH1",
        "brand": "EcoTools",
        "categories": "Beauty|Tools & Accessories|Makeup Brushes & Tools",
        "title": "Bamboo Kabuki Brush & Pouch",
        "price": "12.5",
    }
    assert items["B000SOAP03"]["brand"] == "Dr. Bronner's"
    assert items["B000CREAM2"]["brand"] == "" and items["B000CREAM2"]["price"] == ""
    assert items["B000NOMETA"]["title"] == ""
    triples = read_gzip_csv(tmp_path / "kg_triples.csv.gz")
    assert summary.triples == {
        "produced_by": 2,
        "belongs_to": 11,
        "also_bought": 2,
        "also_viewed": 3,
        "bought_together": 1,
    }
    assert {"head": "B000BRUSH1", "relation": "also_bought", "tail": "B00OUTSIDE"} in triples
    assert (summary.users, summary.items, summary.interactions) == (3, 4, 7)
    assert summary.skipped == {"repeated review of one product": 1}

    dataset = LayoutDataset(tmp_path, name="amazon-beauty")
    assert len(list(dataset.interactions())) == 7
    assert {i.item_id: i.title for i in dataset.items()}["B000CREAM2"] == "Shea Butter Night Cream"
    assert len(list(dataset.triples())) == 19
    assert dataset.problems.rows == []

    # Equal inputs give byte-equal outputs (fixed gzip timestamp, deterministic order).
    again = tmp_path / "again"
    convert(FIXTURES / "reviews_Beauty_5.json", FIXTURES / "meta_Beauty.json", again)
    for name in ("interactions.csv.gz", "items.csv.gz", "kg_triples.csv.gz"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()


def test_amazon_beauty_fetch_converts_and_imports(
    server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gateway: GraphGateway,
    settings: Settings,
) -> None:
    server.files["/reviews_Beauty_5.json.gz"] = gzip.compress(
        (FIXTURES / "reviews_Beauty_5.json").read_bytes()
    )
    server.files["/meta_Beauty.json.gz"] = gzip.compress((FIXTURES / "meta_Beauty.json").read_bytes())
    write_sources(
        tmp_path / "s.toml",
        f"""
[datasets.amazon-beauty]
folder = "amazon-beauty-kg"
convert = "amazon2014"
[[datasets.amazon-beauty.sources]]
name = "reviews_Beauty_5.json.gz"
url = "{server.url}/reviews_Beauty_5.json.gz"
sha256 = ""
[[datasets.amazon-beauty.sources]]
name = "meta_Beauty.json.gz"
url = "{server.url}/meta_Beauty.json.gz"
sha256 = ""
[[datasets.amazon-beauty.files]]
name = "interactions.csv"
sha256 = ""
[[datasets.amazon-beauty.files]]
name = "items.csv"
sha256 = ""
[[datasets.amazon-beauty.files]]
name = "kg_triples.csv"
sha256 = ""
""",
        monkeypatch,
    )
    target = tmp_path / "datasets"
    args = ("fetch", "amazon-beauty", "--datasets-dir", str(target), "--no-mirror")
    code, _, err = run_cli(*args)
    assert code == 1 and "no pinned SHA-256" in err and server.requests == []

    code, out, err = run_cli(*args, "--trust-on-first-use")
    assert code == 0, err
    assert "converted: 3 users, 4 items, 7 interactions" in out

    report = import_dataset(gateway, open_dataset("amazon-beauty", target), settings)
    assert report.problems == []
    nodes = {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}
    assert nodes["User"] == 3
    assert nodes["Item"] == 5  # four reviewed products and one co-purchase target outside them
    assert nodes["Brand"] == 2
