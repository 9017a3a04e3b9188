"""Start and stop a local server process: a free loopback port, a bounded wait for readiness, cleanup.

Used by the Orthanc and MONAI Label launchers (and so by tests/ecosystem); nothing here listens on
anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``GET url`` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL built here
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class ServerProcess:
    """A server subprocess whose output goes to ``log_path``; ``stop`` ends it and its process group.

    Args:
        cmd: the command line.
        log_path: file receiving stdout and stderr (read it when the server fails to start).
        ready_url: URL that answers 2xx once the server is up.
        env, cwd: for the subprocess.
    """

    def __init__(self, cmd: Sequence[str], log_path: str | os.PathLike, ready_url: str,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.ready_url = ready_url
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0, is_ready: Callable[[], bool] | None = None) -> ServerProcess:
        """Start the process and wait at most ``timeout_s`` seconds for it to answer ``ready_url``.

        Raises:
            RuntimeError: the process exited or did not become ready in time (its log tail is in the message);
                the process is stopped before raising.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        try:
            self.process = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            log.close()
        ready = is_ready or (lambda: http_ok(self.ready_url))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if ready():
                return self
            time.sleep(0.5)
        code = self.process.poll()
        self.stop()
        state = f"exited with code {code}" if code is not None else f"not ready after {timeout_s:.0f} s"
        raise RuntimeError(f"{self.cmd[0]} {state} ({self.ready_url}); log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "<no log>"

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL after ``timeout_s`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
