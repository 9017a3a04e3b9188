"""Shared pieces of the benchmark scenarios: peak memory, timers, devices, bundles with random weights.

Bundles are copied, parsed and run through :mod:`tools.runner`.

Every optional dependency (MONAI, nibabel, segmentation_models_pytorch, ...) is imported inside the
function that needs it, so this module imports with torch and numpy alone (a bare GPU machine).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from tools.runner import REPO, copy_bundle, init_random_weights

BUNDLES = REPO / "bundles"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings include it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | torch.device = "cpu") -> tuple[float, object]:
    """Seconds one call of ``fn`` takes (GPU work included) and its result."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


class NetTimer:
    """Forward hooks adding up the seconds spent inside a network's forward passes."""

    def __init__(self, module: torch.nn.Module, device: str):
        self.device, self.seconds, self._t = device, 0.0, 0.0
        self._handles = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _start(self, *_):
        sync(self.device)
        self._t = time.perf_counter()

    def _stop(self, *_):
        sync(self.device)
        self.seconds += time.perf_counter() - self._t


@contextmanager
def autocast(device: str | torch.device, enabled: bool):
    """``torch.autocast`` on CUDA when ``enabled`` (AMP rows); nothing otherwise."""
    if enabled and torch.device(device).type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    else:
        yield


def run_python(code: str, timeout: float = 3600) -> None:
    """Run ``code`` in a fresh interpreter (data generation stays out of the scenario's peak RSS)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"helper process failed:\n{code}\n{proc.stderr[-4000:]}")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """What the results were measured on: the key results are merged under, hardware and versions."""
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:
        monai_version = "not installed"
    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    threads = torch.get_num_threads()
    key = f"cuda | {gpu}" if gpu else f"cpu | {cpu_name()} | {os.cpu_count()} cores | {threads} threads"
    return {
        "key": key,
        "device": str(device),
        "gpu": gpu or "none",
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "monai": monai_version,
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def param_count(net: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


# ------------------------------------------------------------------------------------- bundles


def bundle_with_random_weights(bundle: str, dest: str | os.PathLike, checkpoints: dict[str, str],
                               configs: Sequence[str] = ("inference.json",), overrides: dict | None = None,
                               seed: int = 0) -> Path:
    """Copy ``bundles/<bundle>`` to ``dest`` and write randomly initialised (``seed``) weights.

    ``checkpoints`` maps a file under ``models/`` to the config id of the network it holds, e.g.
    ``{"model.pt": "network_def"}``: inference then runs exactly as with trained weights (the speed
    of a network does not depend on its weights; post-processing can, see the CT tumour scenario).
    """
    root = copy_bundle(bundle, dest)
    init_random_weights(root, {f"models/{filename}": net_id for filename, net_id in checkpoints.items()},
                        configs, seed, overrides)
    return root


def write_json(path: str | os.PathLike, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=float))
