"""Acknowledged events survive a power cut in the middle of ingestion, because the AOF is fsynced.

kill -9 of the graph server alone cannot tell ``appendfsync always`` from ``no``: whatever the
server wrote is in the kernel's page cache, and the kernel writes it to disk later whatever
happened to the process. A power cut loses that page cache. Here the data directory lives on an
ext4 file system in a loop device; at the cut, the server is killed with SIGKILL and the loop
device's backing file is copied at once. The copy holds what had reached the device (what was
fsynced, or written back by the kernel so far) and not what was still only in the page cache:
the disk as a machine that lost power would find it. The server is then started on the copy.

The control runs the same cut with fsync off and must find acknowledged events missing; the
kernel writes dirty pages back only after ``vm.dirty_expire_centisecs`` (30 s by default), so a
short run leaves them unwritten. What this cannot show: a disk or controller that acknowledges a
flush it has not done (the loop device is as honest as the file system holding its image).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from kgrec.config import Settings
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from kgrec.runtime import embedded_server
from tests.conftest import embedded_only
from tests.processes import ApiProcess

pytestmark = embedded_only

KEY = "durability-" + uuid.uuid4().hex
CLIENTS = 4
EVENTS_PER_POST = 25
ACKNOWLEDGED_BEFORE_CUT = 1_500
DISK_MB = 96


class LoopDisk:
    """An ext4 file system in a file, mounted through a loop device; its image can be copied at any moment."""

    def __init__(self, image: Path, mount_point: Path) -> None:
        self.image = image
        self.mount_point = mount_point
        self.device: str | None = None

    def create(self) -> LoopDisk:
        """Make the image and its file system."""
        with open(self.image, "wb") as handle:
            handle.truncate(DISK_MB * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True, capture_output=True)
        return self

    def mount(self, disks: list[LoopDisk]) -> LoopDisk:
        """Attach the image to a free loop device and mount it; ``disks`` lists it for clean-up first."""
        disks.append(self)
        self.mount_point.mkdir(parents=True, exist_ok=True)
        attached = subprocess.run(
            ["losetup", "--find", "--show", str(self.image)], check=True, capture_output=True, text=True
        )
        self.device = attached.stdout.strip()
        subprocess.run(
            ["mount", "-t", "ext4", self.device, str(self.mount_point)], check=True, capture_output=True
        )
        return self

    def cut_power(self, copy: Path) -> LoopDisk:
        """The disk as a power cut would leave it: a copy of what has reached the device so far."""
        shutil.copyfile(self.image, copy)
        return LoopDisk(copy, self.mount_point.with_name(self.mount_point.name + "-after-cut"))

    def unmount(self) -> None:
        """Unmount and detach (lazily if something still holds the mount)."""
        if self.device is None:
            return
        if subprocess.run(["umount", str(self.mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.mount_point)], capture_output=True)
        subprocess.run(["losetup", "-d", self.device], capture_output=True)
        self.device = None


@contextlib.contextmanager
def loop_disks() -> Iterator[list[LoopDisk]]:
    """Every disk added to the list is unmounted at the end, whatever happens."""
    disks: list[LoopDisk] = []
    try:
        yield disks
    finally:
        for disk in reversed(disks):
            disk.unmount()


@dataclass
class Clients:
    """Threads posting valid events over HTTP until told to stop; each keeps the ids acknowledged to it."""

    url: str
    acknowledged: list[list[str]] = field(default_factory=lambda: [[] for _ in range(CLIENTS)])
    refused: list[int] = field(default_factory=lambda: [0] * CLIENTS)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Clients:
        for client in range(CLIENTS):
            thread = threading.Thread(target=self._post, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _post(self, client: int) -> None:
        session = requests.Session()
        batch = 0
        while not self.stop.is_set():
            now = int(time.time() * 1000)
            events = [
                {
                    "event_id": f"c{client}-b{batch}-e{i}",
                    "user_id": f"user-{client}-{i % 5}",
                    "item_id": f"item-{batch % 40}-{i}",
                    "type": "view",
                    "ts": now,
                }
                for i in range(EVENTS_PER_POST)
            ]
            batch += 1
            try:
                response = session.post(
                    f"{self.url}/v1/events",
                    json=events,
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=60,
                )
            except requests.RequestException:
                self.refused[client] += 1
                continue
            if response.status_code == 200 and response.json()["applied"] == len(events):
                self.acknowledged[client].extend(e["event_id"] for e in events)
            else:
                self.refused[client] += 1

    def total(self) -> int:
        return sum(len(ids) for ids in self.acknowledged)

    def wait_for(self, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.total() < count:
            assert time.monotonic() < deadline, f"only {self.total()} events acknowledged"
            assert all(t.is_alive() for t in self.threads)
            time.sleep(0.01)

    def join(self) -> set[str]:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        return {event_id for ids in self.acknowledged for event_id in ids}


def configured(data_dir: Path, **overrides: str) -> Settings:
    """The settings an operator gets from the environment: kgrec's defaults unless overridden here."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KGREC_AOF_FSYNC", "KGREC_GRAPH_THREADS", "NEO4J_URI"}
    }
    return Settings.from_env({**env, "KGREC_DATA_DIR": str(data_dir), **overrides})


def stored_event_ids(settings: Settings) -> set[str]:
    """Start the server on the settings' data directory (replaying its AOF), read every event id, stop it."""
    server = embedded_server(settings)
    server.start()
    try:
        with open_gateway(settings) as gateway:
            return {r["id"] for r in gateway.run_query("MATCH (e:Event) RETURN e.id AS id", {})}
    finally:
        server.stop()


@dataclass
class CutResult:
    """Event ids: acknowledged to the clients, and found by a restart after the kill and after the cut."""

    acknowledged: set[str]
    after_kill: set[str]  # what a restart finds on the same disk: the kernel's view
    after_cut: set[str]  # what a restart finds on the disk as the power cut left it


def kill_during_ingest_then_cut_power(tmp_path: Path, **overrides: str) -> CutResult:
    """Several clients post; the server is killed mid-stream, and the disk copied as a power cut leaves it."""
    with loop_disks() as disks:
        try:
            disk = LoopDisk(tmp_path / "disk.img", tmp_path / "disk").create().mount(disks)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip(f"cannot mount an ext4 loop device here: {exc}")
        data_dir = disk.mount_point / "var"
        settings = configured(data_dir, **overrides)
        server = embedded_server(settings)
        server.start()
        with open_gateway(settings) as gateway:
            migrate(gateway)
        server.rewrite_aof()
        subprocess.run(["sync", "-f", str(disk.mount_point)], check=True)  # the empty graph is on disk
        api = ApiProcess(
            {"KGREC_DATA_DIR": str(data_dir), "KGREC_API_KEYS": KEY},
            log=tmp_path / "api.log",
        ).start()
        try:
            clients = Clients(api.url).start()
            clients.wait_for(ACKNOWLEDGED_BEFORE_CUT)
            server.kill()  # requests are in flight: each thread has one outstanding
            after_cut_disk = disk.cut_power(tmp_path / "disk-after-cut.img")
            acknowledged = clients.join()
        finally:
            api.kill9()
        assert sum(clients.refused) > 0, "no request was in flight when the server died"
        after_kill = stored_event_ids(settings)
        disk.unmount()
        after_cut_disk.mount(disks)
        after_cut = stored_event_ids(configured(after_cut_disk.mount_point / "var", **overrides))
    return CutResult(acknowledged, after_kill, after_cut)


def test_every_acknowledged_event_survives_a_power_cut_mid_ingest(tmp_path: Path) -> None:
    """With kgrec's default settings, as an operator runs it."""
    result = kill_during_ingest_then_cut_power(tmp_path)
    assert len(result.acknowledged) >= ACKNOWLEDGED_BEFORE_CUT
    assert result.acknowledged - result.after_cut == set()
    assert result.acknowledged - result.after_kill == set()


def test_with_fsync_off_the_power_cut_loses_acknowledged_events(tmp_path: Path) -> None:
    """The control: the same cut catches a loss when the AOF is not fsynced, which kill -9 alone does not."""
    expire_s = int(Path("/proc/sys/vm/dirty_expire_centisecs").read_text()) / 100
    if expire_s < 20:
        pytest.skip(f"the kernel writes dirty pages back after {expire_s:.0f} s; the control needs longer")
    result = kill_during_ingest_then_cut_power(tmp_path, KGREC_AOF_FSYNC="no")
    assert result.acknowledged - result.after_kill == set()  # kill -9 alone: nothing lost
    assert result.acknowledged - result.after_cut, "the power cut lost nothing with fsync off"
