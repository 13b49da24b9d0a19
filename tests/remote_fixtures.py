"""A real PostgreSQL and a local S3 server (moto) for the remote-storage tests.

PostgreSQL comes from the Debian package (``apt-get install postgresql``: binaries under
``/usr/lib/postgresql/*/bin``); it refuses to run as root, so as root the cluster is run as
``nobody``. It listens on 127.0.0.1 at a free port, with a throw-away data folder, for the
whole session. Each test gets its own space name (its own schema) and S3 prefix. Where the
binaries, psycopg, s3fs or moto are missing, the tests skip and say why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msa_agent.store import RemoteLocation

BUCKET = "msa-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: on PATH, or the newest Debian cluster's."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


def _as_user() -> list[str]:
    """PostgreSQL refuses root: run it as ``nobody`` when we are root."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str]) -> None:
    done = subprocess.run(_as_user() + cmd, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {done.stdout}\n{done.stderr}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`` of a fresh cluster."""
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[remote]')")
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="msa-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "nobody")
    data, port = root / "data", free_port()
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
          "-E", "UTF8", "--no-sync"])
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
          f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200", "start"])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_options() -> Iterator[dict[str, Any]]:
    """fsspec options of a moto S3 server on 127.0.0.1 holding the bucket ``BUCKET``."""
    pytest.importorskip("s3fs", reason="s3fs not installed (pip install -e '.[remote]')")
    server_mod = pytest.importorskip("moto.server",
                                     reason="moto not installed (pip install -e '.[remote]')")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing", "secret": "testing",
               "endpoint_url": f"http://127.0.0.1:{port}",
               "client_kwargs": {"region_name": "us-east-1"}}
    try:
        boto3 = pytest.importorskip("boto3")
        boto3.client("s3", endpoint_url=options["endpoint_url"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1"
                     ).create_bucket(Bucket=BUCKET)
        yield options
    finally:
        server.stop()


def unique_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_location(pg_url: str, tmp_path: Path) -> RemoteLocation:
    """A new space's location: PostgreSQL metadata, arrays in a local folder (fast)."""
    return RemoteLocation(pg_url, f"file://{tmp_path / 'arrays'}", name=unique_name())


@pytest.fixture
def s3_location(pg_url: str, s3_options: dict[str, Any]) -> RemoteLocation:
    """A new space's location: PostgreSQL metadata, arrays in the moto S3 bucket."""
    name = unique_name()
    return RemoteLocation(pg_url, f"s3://{BUCKET}/{name}", name=name,
                          storage_options=s3_options)
