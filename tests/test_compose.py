"""The production compose file scales out: `--scale worker=N` replicas that share the broker and the
model artifacts, and a training queue that CPU workers take unless a GPU worker does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def queues(service: dict[str, Any]) -> set[str]:
    command = service["command"]
    value = command[command.index("--queues") + 1]
    default = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", value)  # ${VAR:-default}: the default is used
    return set((default.group(1) if default else value).split(","))


def test_every_kgrec_service_shares_one_named_volume_at_the_data_dir() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    kgrec = {name: s for name, s in spec["services"].items() if s.get("image") == "kgrec:latest"}
    assert {"api", "worker", "beat", "gpu-worker"} <= set(kgrec)
    for name, service in kgrec.items():
        data_dir = service["environment"]["KGREC_DATA_DIR"]
        volume = next(v for v in service["volumes"] if v.endswith(f":{data_dir}"))
        assert volume.split(":")[0] in spec["volumes"], f"{name} mounts a host path, not the shared volume"


def test_workers_can_be_scaled_and_someone_always_takes_training() -> None:
    spec = services()
    worker, gpu = spec["worker"], spec["gpu-worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` needs both
    train = worker["environment"]["KGREC_TRAIN_QUEUE"]
    assert queues(worker) == {"celery", train}  # without a GPU worker, CPU workers train
    assert queues(gpu) == {train}
    assert gpu["environment"]["KGREC_TRAIN_QUEUE"] == spec["api"]["environment"]["KGREC_TRAIN_QUEUE"]


def test_the_image_holds_every_package_the_cli_needs() -> None:
    """A package pyproject.toml installs but the Dockerfile does not copy is missing in the image:
    without kgrec_cli, no service of the compose file could start."""
    root = COMPOSE.parent
    include = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in include["include"]}
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (root / "Dockerfile").read_text(), flags=re.M))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    assert "migrations" in copied


def test_migrations_run_before_anything_writes_and_writes_have_a_key() -> None:
    spec = services()
    assert spec["migrate"]["command"] == ["kgrec", "migrate"]
    for name in ("api", "worker", "gpu-worker"):
        assert spec[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert spec["migrate"]["depends_on"]["neo4j"] == {"condition": "service_healthy"}
    for name, service in spec.items():
        if service.get("image") == "kgrec:latest":
            assert "KGREC_API_KEYS" in service["environment"], name


def test_the_api_is_told_its_public_origin() -> None:
    """Behind the TLS proxy the README asks for, the API sees http:// over the Docker bridge: without
    KGREC_PUBLIC_URL the console refused every form post, sign-in included."""
    spec = services()
    assert spec["api"]["environment"]["KGREC_PUBLIC_URL"] == "${KGREC_PUBLIC_URL:-}"
    assert spec["api"]["environment"]["KGREC_API_KEYS"] == spec["worker"]["environment"]["KGREC_API_KEYS"]
