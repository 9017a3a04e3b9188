"""The one bundle runner of the tooling: copy a bundle, run its configs with overrides, build its parts.

The demo, the benchmarks, the DeepLab ablation, the research scripts and the tests run bundles through
this module only. Two ways, the same configs and overrides:

- :func:`run_bundle` / :func:`run_stage`: ``python -m monai.bundle run`` (or another ``monai.bundle``
  verb) in a subprocess, as a user runs a bundle; :func:`bundle_command` is its command line.
- :func:`config_parser` / :func:`run_parsed`: the same merged configs in this process, for tools that
  time or inspect the parts (a network, a trainer) instead of only running them.

Config files are named inside the bundle's ``configs/`` folder (``["inference.json", "evaluate.json"]``,
merged in order); overrides are config ids (``#`` between levels) and values. A recipe stage
(``tools/recipes/<bundle>.yaml``) is a dict ``{name, config, output_dir, overrides, verb}``.

Runs never write into the repository's bundles: :func:`copy_bundle` makes a working copy first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (``LIVERSEG_BUNDLES`` overrides it)."""
    return Path(os.environ.get("LIVERSEG_BUNDLES", REPO / "bundles"))


def copy_bundle(bundle: str, dest: str | os.PathLike) -> Path:
    """Copy ``bundles/<bundle>`` to ``dest`` without weights or run outputs, so runs never touch the repo."""
    src = bundles_dir() / bundle
    dest = Path(dest)
    ignore = shutil.ignore_patterns("*.pt", "*.ts", "*.onnx", "runs", "eval", "mlruns", "__pycache__")
    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
    (dest / "models").mkdir(exist_ok=True)
    return dest


def _config_files(bundle_root: Path, configs: Sequence[str] | str) -> list[str]:
    configs = [configs] if isinstance(configs, str) else list(configs)
    return [str(bundle_root / "configs" / c) for c in configs]


def _cli_value(value: object) -> str:
    """A value as ``monai.bundle`` parses it from the command line (strings and paths as they are)."""
    if isinstance(value, str | os.PathLike):
        return str(value)
    return repr(value)


def bundle_command(
    bundle_root: str | os.PathLike,
    configs: Sequence[str] | str,
    dataset_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
    verb: str = "run",
    python: str = sys.executable,
) -> list[str]:
    """The ``python -m monai.bundle <verb>`` command line for a bundle's ``configs`` and ``overrides``."""
    bundle_root = Path(bundle_root)
    files = _config_files(bundle_root, configs)
    cmd = [python, "-m", "monai.bundle", verb]
    cmd += ["--config_file", files[0] if len(files) == 1 else json.dumps(files)]
    if verb == "run":
        cmd += ["--meta_file", str(bundle_root / "configs" / "metadata.json")]
        if (bundle_root / "configs" / "logging.conf").exists():
            cmd += ["--logging_file", str(bundle_root / "configs" / "logging.conf")]
    cmd += ["--bundle_root", str(bundle_root)]
    if dataset_dir is not None:
        cmd += ["--dataset_dir", str(dataset_dir)]
    if output_dir is not None:
        cmd += ["--output_dir", str(output_dir)]
    for key, value in (overrides or {}).items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


def run_bundle(
    bundle_root: str | os.PathLike,
    configs: Sequence[str] | str,
    dataset_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, object] | None = None,
    verb: str = "run",
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    timeout: float | None = None,
    python: str = sys.executable,
) -> subprocess.CompletedProcess:
    """Run a bundle's ``configs`` with ``overrides`` through ``python -m monai.bundle`` in a subprocess.

    Args:
        bundle_root: the bundle folder (a copy made by :func:`copy_bundle` for anything that writes).
        configs: config file names inside ``configs/``, merged in order.
        dataset_dir, output_dir: passed as ``--dataset_dir`` / ``--output_dir`` when given.
        overrides: config id -> value (strings as they are, other values as Python literals).
        verb: the ``monai.bundle`` command (``run``, ``verify_net_in_out``, ``ckpt_export``, ...).
        env: environment variables added to this process's.
        capture: capture the output (``False`` shows the run's progress on the console).
        timeout: seconds before the run is killed.
        python: the interpreter (another environment's, for example).

    Raises:
        RuntimeError: the run failed; the message holds the command and the tail of its output.
    """
    cmd = bundle_command(bundle_root, configs, dataset_dir, output_dir, overrides, verb, python)
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.run(cmd, capture_output=capture, text=True, env=full_env, timeout=timeout)
    if proc.returncode != 0:
        log = (proc.stdout or "")[-4000:] + "\n" + (proc.stderr or "")[-8000:] if capture else ""
        raise RuntimeError(f"bundle run failed (exit {proc.returncode}):\n{' '.join(cmd)}\n{log}")
    return proc


def run_stage(
    stage: Mapping,
    bundle_root: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    extra_overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run one recipe stage with :func:`run_bundle`, writing to ``work_dir / stage['output_dir']``.

    Raises:
        RuntimeError: the stage failed (its name, the command and the log tail are in the message).
    """
    output_dir = Path(work_dir) / stage.get("output_dir", stage["name"])
    overrides = {**(stage.get("overrides") or {}), **(extra_overrides or {})}
    try:
        return run_bundle(bundle_root, stage["config"], dataset_dir, output_dir, overrides,
                          verb=stage.get("verb", "run"), env=env, capture=capture, timeout=timeout)
    except RuntimeError as err:
        raise RuntimeError(f"stage '{stage['name']}' failed: {err}") from None


def config_parser(bundle_root: str | os.PathLike, configs: Sequence[str] | str,
                  overrides: Mapping[str, object] | None = None):
    """A MONAI ``ConfigParser`` over a bundle's ``configs`` (merged in order) with ``overrides`` set.

    ``bundle_root`` is set to the given folder; ``dataset_dir`` / ``output_dir`` go in ``overrides``.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_root)
    parser = ConfigParser()
    parser.read_config(_config_files(root, configs))
    parser.update({"bundle_root": str(root), **(overrides or {})})
    return parser


def run_parsed(parser) -> None:
    """Run a parsed bundle config in this process as ``monai.bundle run`` does: ``initialize``, ``run``, ``finalize``.

    Parts already built from ``parser`` (a network with timing hooks, for example) are the ones that run.
    """
    for section in ("initialize", "run", "finalize"):
        if section in parser:
            parser.get_parsed_content(section)


def init_random_weights(bundle_root: str | os.PathLike, weights: Mapping[str, str] | None = None,
                        configs: Sequence[str] | str = ("inference.json",), seed: int = 0,
                        overrides: Mapping[str, object] | None = None) -> list[Path]:
    """Save randomly initialised networks of a bundle as plain state dicts (speed and plumbing checks).

    Args:
        bundle_root: the bundle folder (a copy).
        weights: checkpoint path (relative to ``bundle_root``) -> config id of the network it holds,
            default ``{"models/model.pt": "network_def"}``.
        configs: config files inside ``configs/`` that define the networks.
        seed: torch seed set before each network is built, so the same call writes the same weights.
        overrides: config overrides applied before instantiating (smoke-scale sizes, for example).

    Returns:
        the written checkpoint paths.
    """
    from liverseg_monai.io.atomic import atomic_path

    root = Path(bundle_root)
    written = []
    for rel, net_id in (weights or {"models/model.pt": "network_def"}).items():
        torch.manual_seed(seed)
        net = config_parser(root, configs, overrides).get_parsed_content(net_id)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(net.state_dict(), tmp)
        written.append(path)
    return written


def set_config_values(bundle_root: str | os.PathLike, config: str, values: Mapping[str, object]) -> Path:
    """Rewrite ``configs/<config>`` of a bundle *copy* with ``id -> value`` set.

    For tools that run a bundle without taking overrides (MONAI Label reads ``configs/inference.json``
    as it is): for example smoke-scale sizes in a throw-away copy. Ids use ``#`` between levels.
    """
    from monai.bundle import ConfigParser

    from liverseg_monai.io.atomic import atomic_path

    path = Path(bundle_root) / "configs" / config
    parser = ConfigParser()
    parser.read_config(str(path))
    for key, value in values.items():
        parser[key] = value
    with atomic_path(path) as tmp:
        ConfigParser.export_config_file(parser.get(), str(tmp), fmt="json", indent=4)
    return path
