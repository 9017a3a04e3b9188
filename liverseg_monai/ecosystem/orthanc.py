"""DICOMweb with an Orthanc server: a local launcher and a small STOW-RS / WADO-RS / QIDO-RS client.

The client is plain ``requests`` and works with any DICOMweb server (``base_url`` is the DICOMweb
root, for Orthanc ``http://HOST:PORT/dicom-web``). The launcher starts Debian's ``Orthanc`` with the
``orthanc-dicomweb`` plugin from a generated configuration: its own storage folder, loopback only
(``RemoteAccessAllowed`` false), authentication off, free HTTP and DICOM ports.

Example (see docs/dicom.md)::

    with OrthancServer(tmp_dir).start() as server:
        stow(server.dicomweb_url, series_files)
        retrieve_series(server.dicomweb_url, study_uid, series_uid, "back/")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

import pydicom
import requests

from liverseg_monai.ecosystem.servers import LOOPBACK, ServerProcess, free_port
from liverseg_monai.io.atomic import atomic_path

DICOM_PART = 'multipart/related; type="application/dicom"'
# DICOM JSON tags of a STOW-RS response
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


class DicomWebError(RuntimeError):
    """A DICOMweb request that the server refused or answered incompletely."""


def find_orthanc() -> tuple[str | None, str | None]:
    """``(Orthanc executable, DICOMweb plugin library)``; either is ``None`` when not installed.

    Debian's ``orthanc`` installs ``/usr/sbin/Orthanc``; ``orthanc-dicomweb`` installs
    ``/usr/share/orthanc/plugins/libOrthancDicomWeb.so`` (``dpkg -L orthanc-dicomweb``).
    """
    exe = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None)
    plugin = os.environ.get("ORTHANC_DICOMWEB_PLUGIN") or next((p for p in PLUGIN_CANDIDATES if os.path.isfile(p)), None)
    if plugin is None and shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True).stdout
        plugin = next((line for line in listing.splitlines() if line.endswith(".so") and os.path.isfile(line)), None)
    return exe, plugin


def orthanc_config(work_dir: Path, http_port: int, dicom_port: int, plugin: str) -> dict:
    """An Orthanc configuration for a private test server under ``work_dir``."""
    return {
        "Name": "LIVERSEG_TEST",
        "StorageDirectory": str(work_dir / "storage"),
        "IndexDirectory": str(work_dir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "LIVERSEG",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpDescribeErrors": True,
        "StableAge": 1,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }


class OrthancServer:
    """A private Orthanc on 127.0.0.1 with the DICOMweb plugin; its files stay under ``work_dir``.

    Args:
        work_dir: folder for the configuration, storage and log (created).
        executable, plugin: default from :func:`find_orthanc`.
    """

    def __init__(self, work_dir: str | os.PathLike, executable: str | None = None, plugin: str | None = None):
        found_exe, found_plugin = find_orthanc()
        self.executable = executable or found_exe
        self.plugin = plugin or found_plugin
        if self.executable is None or self.plugin is None:
            raise FileNotFoundError("Orthanc or its DICOMweb plugin is not installed: run scripts/ci/setup_orthanc.sh")
        self.work_dir = Path(work_dir)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://{LOOPBACK}:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self._process: ServerProcess | None = None

    def start(self, timeout_s: float = 60.0) -> OrthancServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_dir = self.work_dir / "config"
        config_dir.mkdir(exist_ok=True)
        config = orthanc_config(self.work_dir, self.http_port, self.dicom_port, self.plugin)
        (config_dir / "orthanc.json").write_text(json.dumps(config, indent=2))
        self._process = ServerProcess([self.executable, str(config_dir)], self.work_dir / "orthanc.log",
                                      ready_url=f"{self.dicomweb_url}/studies", cwd=self.work_dir)
        self._process.start(timeout_s=timeout_s)
        return self

    def log_tail(self) -> str:
        return self._process.log_tail() if self._process else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def __enter__(self) -> OrthancServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _dicom_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return files


def stow(base_url: str, paths: Iterable[str | os.PathLike], timeout_s: float = 60.0) -> list[str]:
    """Store DICOM files with STOW-RS (``POST {base_url}/studies``); returns the stored SOPInstanceUIDs.

    Args:
        base_url: the DICOMweb root.
        paths: DICOM files, or folders whose files are all sent.

    Raises:
        DicomWebError: the server answered an error status or listed failed instances.
    """
    files = _dicom_files(paths)
    if not files:
        raise DicomWebError(f"nothing to store: no files in {list(map(str, paths))}")
    boundary = uuid.uuid4().hex
    body = bytearray()
    for f in files:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += f.read_bytes() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"{DICOM_PART}; boundary={boundary}", "Accept": "application/dicom+json"}
    response = requests.post(f"{base_url}/studies", data=bytes(body), headers=headers, timeout=timeout_s)
    if response.status_code not in (200, 202):
        raise DicomWebError(f"STOW-RS to {base_url} failed: HTTP {response.status_code}: {response.text[:500]}")
    result = response.json() if response.content else {}
    failed = result.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
    if failed:
        raise DicomWebError(f"STOW-RS to {base_url}: {len(failed)} of {len(files)} instances failed: {failed[:3]}")
    stored = [item.get("00081155", {}).get("Value", [None])[0]
              for item in result.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])]
    if len(stored) != len(files):
        raise DicomWebError(f"STOW-RS to {base_url}: stored {len(stored)} of {len(files)} instances")
    return stored


def _multipart_parts(content: bytes, content_type: str) -> list[bytes]:
    """The bodies of a ``multipart/related`` response."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise DicomWebError(f"multipart response without boundary: {content_type!r}")
    parts = []
    for chunk in content.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, sep, body = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return parts


def retrieve_series(base_url: str, study_uid: str, series_uid: str, out_folder: str | os.PathLike,
                    timeout_s: float = 60.0) -> list[Path]:
    """Retrieve a series with WADO-RS into ``out_folder`` (one ``SOPInstanceUID.dcm`` per instance).

    Raises:
        DicomWebError: an error status, or a response without DICOM instances.
    """
    url = f"{base_url}/studies/{study_uid}/series/{series_uid}"
    response = requests.get(url, headers={"Accept": f"{DICOM_PART}; transfer-syntax=*"}, timeout=timeout_s)
    if response.status_code != 200:
        raise DicomWebError(f"WADO-RS {url} failed: HTTP {response.status_code}: {response.text[:500]}")
    parts = _multipart_parts(response.content, response.headers.get("Content-Type", ""))
    if not parts:
        raise DicomWebError(f"WADO-RS {url} returned no instances")
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for part in parts:
        sop_uid = pydicom.dcmread(BytesIO(part), stop_before_pixels=True).SOPInstanceUID
        path = out / f"{sop_uid}.dcm"
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(part)
        written.append(path)
    return written


def search_series(base_url: str, timeout_s: float = 30.0, **query: str) -> list[dict]:
    """QIDO-RS ``GET {base_url}/series?KEY=VALUE``: the matching series as DICOM JSON dicts."""
    response = requests.get(f"{base_url}/series", params=query, headers={"Accept": "application/dicom+json"},
                            timeout=timeout_s)
    if response.status_code != 200:
        raise DicomWebError(f"QIDO-RS {base_url}/series failed: HTTP {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else []


def tag_value(item: dict, tag: str) -> str | None:
    """First value of ``tag`` (8 hex digits) in a DICOM JSON dict."""
    values = item.get(tag, {}).get("Value", [])
    return str(values[0]) if values else None
