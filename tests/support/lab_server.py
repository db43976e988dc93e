"""A JupyterLab server on loopback, rooted at a scratch copy of the course notebooks, for the tests that
use the course as a student does (the contents API, a real browser). It is stopped by the PID it started."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sprc_lib.paths import checkout

NOTEBOOKS = checkout() / "notebooks"
TOKEN = "sprc-course-test"


@dataclass(frozen=True)
class Lab:
    url: str  # http://127.0.0.1:PORT
    root: Path  # the scratch notebooks folder the server serves
    token: str = TOKEN

    def api(self, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"{self.url}/api/{path}", data=body, method=method, headers={
            "Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()


def copy_notebooks(dest: Path) -> Path:
    """The course's notebook folder as a student's checkout has it: the pairs and their jupytext config."""
    shutil.copytree(NOTEBOOKS, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def lab_server(root: Path, log: Path, settings: Path | None = None, data_dir: Path | None = None) -> Iterator[Lab]:
    """`jupyter lab` on loopback with a token, rooted at `root` (`settings`: a user-settings folder; `data_dir`:
    a Jupyter data folder of its own, whose empty signature store trusts no notebook, as on another
    machine); yields once the API answers."""
    port = _free_port()
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
               "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    if settings is not None:
        command.append(f"--LabApp.user_settings_dir={settings}")
    env = {**os.environ, "SPRC_MODE": "tiny", **({"JUPYTER_DATA_DIR": str(data_dir)} if data_dir else {})}
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                  start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", root)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                lab.api("status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield lab
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started, by the PID we started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
