"""MONAI Label with this repository's bundles: app folder layout, a local server, and a small HTTP client.

MONAI Label's ``monaibundle`` sample app serves every bundle found in its ``model/`` folder that is
named in ``--conf models``. This module copies the sample app out of a MONAI Label installation,
places bundles under ``model/``, starts ``monailabel start_server`` on 127.0.0.1 and talks to its
``/info``, ``/infer`` and ``/train`` endpoints (see docs/monailabel.md).

MONAI Label 0.8.5 needs its own environment (``scripts/ci/setup_monailabel.sh`` makes
``.venv-monailabel``); this module only starts it as a subprocess, so it runs from the main one.
Facts the layout relies on: MONAI Label loads ``configs/inference.json`` and ``configs/train.json``,
``models/model.pt`` as a plain state dict, and skips a bundle silently when that file is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from tools.ecosystem.servers import LOOPBACK, ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
# the environment scripts/ci/setup_monailabel.sh makes (same MONAILABEL_VENV variable, relative to the repository)
DEFAULT_VENV = REPO / os.environ.get("MONAILABEL_VENV", ".venv-monailabel")
# offline operation: bundles come from the app's model/ folder, no SAM2 download
OFFLINE_CONF = {"zoo_source": "github", "sam2": "false"}


class MonaiLabelError(RuntimeError):
    """A MONAI Label request that failed."""


def monailabel_python(venv: str | os.PathLike = DEFAULT_VENV) -> Path | None:
    """The Python of a MONAI Label environment, or ``None`` when it is not set up."""
    python = Path(venv) / "bin" / "python"
    return python if python.is_file() and (Path(venv) / "monailabel").is_dir() else None


def sample_app(venv: str | os.PathLike = DEFAULT_VENV, name: str = "monaibundle") -> Path:
    """The sample app shipped in the monailabel wheel (installed to ``<venv>/monailabel/sample-apps``)."""
    app = Path(venv) / "monailabel" / "sample-apps" / name
    if not (app / "main.py").is_file():
        raise FileNotFoundError(f"{app}: MONAI Label sample app not found; run scripts/ci/setup_monailabel.sh")
    return app


def make_app(app_dir: str | os.PathLike, bundles: Mapping[str, str | os.PathLike],
             venv: str | os.PathLike = DEFAULT_VENV) -> Path:
    """Copy the ``monaibundle`` sample app to ``app_dir`` and the bundles to ``app_dir/model/<name>``.

    Args:
        app_dir: the app folder to create (must not exist).
        bundles: bundle name (as given to ``--conf models``) -> bundle folder; each needs
            ``models/model.pt`` or MONAI Label ignores it.
    """
    app = Path(app_dir)
    shutil.copytree(sample_app(venv), app, ignore=shutil.ignore_patterns("__pycache__"))
    for name, folder in bundles.items():
        shutil.copytree(folder, app / "model" / name, ignore=shutil.ignore_patterns("__pycache__", "eval"))
    return app


class MonaiLabelServer:
    """``monailabel start_server`` on 127.0.0.1 (free port) serving ``models`` from ``app_dir``.

    Args:
        app_dir: app folder made by :func:`make_app`.
        studies: the datastore folder (images; labels under ``labels/final``).
        models: bundle names to serve.
        log_path: server log.
        venv: the MONAI Label environment.
        conf: extra ``--conf`` pairs.
    """

    def __init__(self, app_dir: str | os.PathLike, studies: str | os.PathLike, models: Sequence[str],
                 log_path: str | os.PathLike, venv: str | os.PathLike = DEFAULT_VENV,
                 conf: Mapping[str, str] | None = None):
        python = monailabel_python(venv)
        if python is None:
            raise FileNotFoundError(f"{venv}: MONAI Label environment not found; run scripts/ci/setup_monailabel.sh")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        cmd = [str(python), "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies),
               "--host", LOOPBACK, "--port", str(self.port)]
        for key, value in {**OFFLINE_CONF, "models": ",".join(models), **(conf or {})}.items():
            cmd += ["--conf", key, str(value)]
        env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "PYTHONUNBUFFERED": "1", "MONAI_LABEL_SESSION_PATH": str(Path(log_path).parent / "sessions")}
        env.pop("PYTHONPATH", None)
        self._process = ServerProcess(cmd, log_path, ready_url=f"{self.url}/info/", env=env, cwd=str(app_dir))

    def start(self, timeout_s: float = 180.0) -> MonaiLabelServer:
        self._process.start(timeout_s=timeout_s)
        return self

    def log_tail(self, n_chars: int = 6000) -> str:
        return self._process.log_tail(n_chars)

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> MonaiLabelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def info(url: str, timeout_s: float = 30.0) -> dict:
    """``GET /info/``: the served models, labels and trainers."""
    response = requests.get(f"{url}/info/", timeout=timeout_s)
    if response.status_code != 200:
        raise MonaiLabelError(f"GET {url}/info/: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


def infer(url: str, model: str, image_id: str, out_path: str | os.PathLike, timeout_s: float = 300.0,
          params: Mapping[str, object] | None = None) -> Path:
    """``POST /infer/{model}?image={image_id}&output=image``: writes the returned label file to ``out_path``."""
    response = requests.post(f"{url}/infer/{model}", params={"image": image_id, "output": "image"},
                             data={"params": json.dumps(dict(params or {}))}, timeout=timeout_s)
    if response.status_code != 200:
        raise MonaiLabelError(f"POST {url}/infer/{model} ({image_id}): HTTP {response.status_code}: {response.text[:1000]}")
    out = Path(out_path)
    out.write_bytes(response.content)
    return out


def train(url: str, model: str, params: Mapping[str, object], timeout_s: float = 600.0) -> dict:
    """Start ``POST /train/{model}`` with ``params`` and wait until it ends; returns the final task record.

    Raises:
        MonaiLabelError: the request failed, or the task did not end with status ``DONE`` in time.
    """
    response = requests.post(f"{url}/train/{model}", params={"run_sync": "false"}, json=dict(params), timeout=60)
    if response.status_code != 200:
        raise MonaiLabelError(f"POST {url}/train/{model}: HTTP {response.status_code}: {response.text[:1000]}")
    deadline = time.monotonic() + timeout_s
    task: dict = {}
    while time.monotonic() < deadline:
        task = requests.get(f"{url}/train/", params={"check_if_running": "false"}, timeout=30).json()
        if task.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(2)
    if task.get("status") != "DONE":
        details = "\n".join(task.get("details", [])[-30:])
        raise MonaiLabelError(f"training {model} ended with status {task.get('status')!r}:\n{details}")
    return task

