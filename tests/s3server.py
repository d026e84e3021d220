"""moto's standalone S3 server (``moto[server]``) on a free port, for tests that read ``s3://`` URLs.

Clients reach it through the standard AWS environment (``aws_env``): botocore honours
``AWS_ENDPOINT_URL``, so s3fs in the workers and the producer needs nothing else.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tsbatch.localstack import Process, free_port

STARTUP_TIMEOUT_S = 30.0


@dataclass
class S3Server:
    process: Process

    @property
    def url(self) -> str:
        return self.process.url

    def aws_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.url,
        }

    def put(self, bucket: str, key: str, data: bytes) -> None:
        import boto3

        env = self.aws_env()
        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        buckets = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in buckets:
            client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=data)

    def stop(self) -> None:
        self.process.stop()


def start_s3(workdir: Path) -> S3Server:
    port = free_port()
    log = workdir / f"moto-{port}.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(Process("moto", proc, log, port))
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{server.url}/moto-api/", timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto_server not ready after {STARTUP_TIMEOUT_S}s; see {log}")
