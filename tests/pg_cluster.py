"""A throw-away PostgreSQL cluster for tests: Debian's binaries, 127.0.0.1, a free port, a data
directory under /tmp, stopped and deleted at the end. As root, the server runs as `postgres`
(it refuses root) through `runuser`."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BIN_DIRS = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else sorted(
    Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The newest directory with initdb and pg_ctl, if any."""
    for d in BIN_DIRS:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    """A running throw-away cluster that a test may stop and start again (the same data, port and URL)."""

    def __init__(self, bin_dir: Path, root: Path, port: int, durable: bool = False) -> None:
        self.bin_dir, self.root, self.port, self.durable = bin_dir, root, port, durable
        self.data, self.log = root / "data", root / "server.log"
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        # Fast and forgetful by default (tests that never crash the server); `durable`: PostgreSQL's
        # defaults, so that a commit it acknowledged survives `stop("immediate")`, as in production.
        fast = "" if self.durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} {fast}-c max_connections=200"
        subprocess.run(_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o",
                                  options, "-w", "-t", "60", "start"]), check=True, capture_output=True)

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: as a crash (no checkpoint; recovery at the next start); `fast`: clean."""
        subprocess.run(_as_owner([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
                       capture_output=True)


@contextlib.contextmanager
def running_cluster(durable: bool = False) -> Iterator[Cluster]:
    """Start a cluster (trust auth, 127.0.0.1, a free port); stop and delete it at the end."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="pg-test-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER)
    server = Cluster(bin_dir, root, _free_port(), durable)
    try:
        subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(server.data), "-U", SUPERUSER, "--auth=trust",
                                  "-E", "UTF8", "--locale=C", "--no-sync"]),
                       check=True, capture_output=True)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    except subprocess.CalledProcessError as exc:
        tail = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{tail}") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster; yield the URL of its `postgres` database as the superuser (trust auth)."""
    with running_cluster() as server:
        yield server.url
