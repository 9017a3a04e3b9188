"""A private Orthanc with the DICOMweb plugin on 127.0.0.1, for the tests and a workstation.

Starts Debian's ``Orthanc`` with the ``orthanc-dicomweb`` plugin from a generated configuration: its
own storage folder, loopback only (``RemoteAccessAllowed`` false), authentication off, free HTTP and
DICOM ports (``scripts/ci/setup_orthanc.sh`` installs both packages). Talk to it with the library's
DICOMweb client, :mod:`liverseg_monai.ecosystem.orthanc` (see docs/dicom.md)::

    with OrthancServer(tmp_dir).start() as server:
        stow(server.dicomweb_url, series_files)
        retrieve_series(server.dicomweb_url, study_uid, series_uid, "back/")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tools.ecosystem.servers import LOOPBACK, ServerProcess, free_port

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


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
