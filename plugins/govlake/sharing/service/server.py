"""Run the sharing service on uvicorn, and start/stop a local one (demo, tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from govlake.sharing.service.settings import Settings


def serve(settings: Settings, workers: int = 1) -> int:
    import uvicorn

    from govlake.sharing.service.app import create_app

    os.umask(0o077)  # everything the service writes is private to its OS user
    print(f"govlake sharing service on http://{settings.host}:{settings.port} (lake {settings.lake.root}; "
          f"settings {settings.source}; {max(1, workers)} worker process(es))", file=sys.stderr, flush=True)
    if workers <= 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                    access_log=False, timeout_graceful_shutdown=5)
        return 0
    # several processes: uvicorn imports the app factory in each; the settings file and lake come
    # from this (the server's own) environment. Rate limits are then counted per process.
    os.environ["GOVLAKE_SERVICE_SETTINGS"] = settings.source
    os.environ["GOVLAKE_LAKE_ROOT"] = str(settings.lake.root)
    uvicorn.run("govlake.sharing.service.server:app_factory", factory=True, host=settings.host,
                port=settings.port, workers=workers, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0


def app_factory():
    """The app of one worker process (``govlake serve --workers N``)."""
    from govlake.sharing.service.app import create_app
    from govlake.sharing.service.settings import load

    src = os.environ.get("GOVLAKE_SERVICE_SETTINGS")
    return create_app(load(src if src and os.path.exists(src) else None, allow_remote=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A ``govlake serve`` child process on a free loopback port (for the demo and tests)."""

    def __init__(self, env: dict | None = None, port: int | None = None, log: Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(env or os.environ)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "LocalServer":
        import httpx

        exe = Path(sys.executable).with_name("govlake")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "govlake.cli"]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd + ["serve", "--port", str(self.port)], env=self.env,
                                     stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"govlake serve exited with {self.proc.returncode}"
                                   + (f"; see {self.log}" if self.log else ""))
            try:
                httpx.get(self.url + "/openapi.json", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"govlake serve did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
