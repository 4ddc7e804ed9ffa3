"""A real S3-compatible HTTP server for tests and benchmarks: ``moto_server`` (the ``moto[server]``
dev dependency) in its own process on a loopback or harness bridge address, with request signing
enforced, so wrong credentials are refused as a real bucket refuses them.

    proc, server = start("127.0.0.1", Path("moto.log"))   # server.endpoint, .access_key, ...
    ...
    stop(proc)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
START_TIMEOUT_SECONDS = 30.0
#: Requests moto serves before it checks signatures: the IAM calls that make the test user.
SETUP_REQUESTS = 3
REGION = "us-east-1"
BUCKET = "streamtrain-data"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  #: ``http://address:port``
    access_key: str
    secret_key: str
    bucket: str = BUCKET

    def filesystem(self, secret_key: str | None = None) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(access_key=self.access_key,
                                 secret_key=secret_key or self.secret_key, region=REGION,
                                 scheme="http", endpoint_override=self.endpoint.split("://")[1])

    def config_toml(self, secret_key: str | None = None) -> str:
        """An ``[s3]`` section reaching this server."""
        return (f'\n[s3]\nendpoint = "{self.endpoint}"\nregion = "{REGION}"\n'
                f'access_key = "{self.access_key}"\nsecret_key = "{secret_key or self.secret_key}"\n')

    def upload(self, local_root: Path, prefix: str) -> None:
        """Copy every file under ``local_root`` to ``s3://bucket/prefix``."""
        pafs.copy_files(str(local_root), f"{self.bucket}/{prefix}",
                        source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem())


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def start(address: str, log_path: Path) -> tuple[subprocess.Popen, S3Server]:
    """Start moto on ``address`` (loopback or the harness's bridge), make a user and a bucket."""
    import boto3

    port = _free_port(address)
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    log = open(log_path, "w")
    proc = subprocess.Popen([MOTO_SERVER, "-H", address, "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    endpoint = f"http://{address}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"moto_server did not start on {endpoint}: "
                                   f"{log_path.read_text()[-2000:]}") from None
            time.sleep(0.1)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="setup", aws_secret_access_key="setup")
    iam.create_user(UserName="trainer")
    iam.put_user_policy(UserName="trainer", PolicyName="all", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": '
        '[{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'))
    key = iam.create_access_key(UserName="trainer")["AccessKey"]
    server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                 aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key).create_bucket(Bucket=BUCKET)
    return proc, server


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
