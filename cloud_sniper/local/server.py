"""The local server: the emulated account with the app deployed, served over loopback.

`cloud-sniper local up` starts it in the background so that executions waiting for an approval
keep waiting, and `cloud-sniper approvals approve` typed in another terminal resumes them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class ServerStatus:
    pid: int
    port: int
    log_file: str
    started_at: float
    policy: str | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def state_dir() -> Path:
    """Where the local runtime keeps its assembly, server status and log."""
    return Path(os.environ.get("CLOUD_SNIPER_HOME", ".cloud-sniper")).resolve()


def status_file() -> Path:
    return state_dir() / "server.json"


def read_status() -> ServerStatus | None:
    """The running server's status, or None when no server answers."""
    try:
        status = ServerStatus(**json.loads(status_file().read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None
    if not _alive(status.pid) or not _listening(status.port):
        return None
    return status


def start_background(policy: Path | None = None, timeout: float = 600.0) -> ServerStatus:
    """Start the server in a background process and wait until it has deployed the app.

    With a policy file, the app is synthesized with it instead of the default policy.
    """
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "server.log"
    port = _free_port()
    status_file().unlink(missing_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud_sniper.local.server",
                "--port",
                str(port),
                *(["--policy", str(policy)] if policy else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status()
        if status is not None and status.pid == process.pid:
            return status
        if process.poll() is not None:
            raise RuntimeError(f"local server exited with {process.returncode}: see {log_file}")
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"local server did not start within {timeout:.0f} s: see {log_file}")


def stop_background() -> ServerStatus | None:
    """Stop the running server; its emulated account and everything in it are gone."""
    status = read_status()
    if status is None:
        return None
    # A server busy ending its executions gets 10 s to stop; then it is killed: its state was
    # to be lost either way, and a server left running would hold the port and the account.
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(status.pid, stop_signal)
        except ProcessLookupError:
            break
        if _ended(status.pid, seconds=10):
            break
    status_file().unlink(missing_ok=True)
    return status


def _ended(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def synthesize_for(policy: Path | None) -> Path:
    """The app's cloud assembly for the local account, with the given policy or the default one."""
    from cloud_sniper.local.runtime import LOCAL_CONTEXT
    from cloud_sniper.synth import synthesize

    context = {**LOCAL_CONTEXT, **({"policy": str(policy)} if policy else {})}
    return synthesize(state_dir() / "cdk.out", context=context)


def serve(port: int, policy: Path | None = None) -> None:
    """Run the emulated account in this process and serve it on loopback until stopped."""
    from moto.server import ThreadedMotoServer

    from cloud_sniper.local.account import seed_estate
    from cloud_sniper.local.runtime import LocalCloud

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    assembly = synthesize_for(policy)
    cloud = LocalCloud(assembly, log_file=state_dir() / "functions.log").start()
    seed_estate(cloud.clients)
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()

    log_file = str(state_dir() / "server.log")
    status = ServerStatus(os.getpid(), port, log_file, time.time(), str(policy) if policy else None)
    status_file().write_text(json.dumps(asdict(status)))
    logging.info("serving the emulated account on %s", status.endpoint_url)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    cloud.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        # A server this process started and that has ended is a zombie until reaped: reap it.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", type=Path, help="a policy file instead of the default")
    arguments = parser.parse_args()
    serve(arguments.port, arguments.policy)
