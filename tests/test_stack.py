"""``kgrec up`` and ``kgrec cypher`` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, _pid_alive
from kgrec.job_queue import job_client
from kgrec_cli.main import main
from tests.conftest import embedded_only
from tests.processes import free_port, wait_for
from tests.stack_process import up_argv
from tests.subsets import amazon_beauty_subset


@embedded_only
def test_up_serves_the_api_and_stops_cleanly_on_sigterm(tmp_path: Path, shared_data: Path) -> None:
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=20)
    data_dir = tmp_path / "var"
    port = free_port()
    env = dict(os.environ)
    env.pop("NEO4J_URI", None)
    up = subprocess.Popen(
        up_argv(data_dir, port, "--datasets-dir", str(shared_data), "--import", str(subset), "--train"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(f"{base}/healthz", timeout_s=300).json() == {"status": "ok"}
        assert wait_for(f"{base}/readyz").json()["engine"] == "falkordb"
        stats = requests.get(f"{base}/v1/graph/stats", timeout=10).json()
        assert stats["nodes"]["User"] == 20
        assert stats["nodes"].get("ModelVersion") == 1, stats  # --train trained one, as `make run` does
        user = "A1YJEY40YUW4SE"  # the first user of Amazon Beauty, inside the subset
        recommended = requests.get(f"{base}/v1/users/{user}/recommendations?k=5", timeout=30).json()
        assert len(recommended["items"]) == 5 and recommended["model_version"]
        missing = requests.get(f"{base}/v1/nowhere", timeout=10)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        server = EmbeddedServer(data_dir).running()
        assert server is not None and server.owner_pid == up.pid
        celery = job_client(Settings(data_dir=data_dir))
        deadline = time.monotonic() + 60
        replies = []
        while not replies and time.monotonic() < deadline:
            replies = celery.control.ping(timeout=1.0)
        assert replies, "kgrec up started no Celery worker"
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=120)
    assert up.returncode == 0, output
    assert "kgrec stopped" in output
    assert not _pid_alive(server.pid)
    assert EmbeddedServer(data_dir).running() is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)
    # the API's metrics folder (one per port) goes with it
    assert not (Path(tempfile.gettempdir()) / f"kgrec-metrics-{port}").exists()


def test_cypher_command_prints_json_rows(settings: object, graph_server: object) -> None:
    env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": "cypher_cli"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kgrec_cli.main",
            "cypher",
            "RETURN $n + 1 AS n, $s AS s",
            "--param",
            "n=41",
            "--param",
            "s=it's",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"n": 42, "s": "it's"}]
    broken = subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", "cypher", "MATCH (n RETURN n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 1
    assert broken.stderr.startswith("kgrec: error:")
    assert "Traceback" not in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


def test_datasets_dir_is_separate_from_the_graph_data_dir(tmp_path: Path) -> None:
    """``--datasets-dir`` names the data sets' folder; on ``up``, ``--data-dir`` is the graph's folder."""
    runner = CliRunner()
    for command in ("import", "evaluate"):
        shown = runner.invoke(main, [command, "--help"]).output
        assert "--datasets-dir" in shown and "--data-dir" not in shown, shown  # the old name is hidden
    shown = runner.invoke(main, ["up", "--help"]).output
    assert "--datasets-dir" in shown and "--data-dir" in shown
    # The former name still works on import: a folder without the data set is reported as such.
    for option in ("--datasets-dir", "--data-dir"):
        result = runner.invoke(main, ["import", "amazon-beauty", option, str(tmp_path / "nowhere")])
        assert result.exit_code != 0 and "nowhere" in result.output, result.output
