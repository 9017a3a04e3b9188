"""Ignite handlers of the DINO pretraining bundle: writing ``backbone.pt`` and per-tile embeddings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import
from torch import nn

from liverseg_monai.networks.weights import save_backbone

Events, _ = optional_import("ignite.engine", "0.4.4", min_version, "Events")
logger = logging.getLogger(__name__)


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class SaveBackbone:
    """Write the encoder of ``network`` as ``backbone.pt`` (torchvision ResNet key names, no ``fc.``).

    Attached to a trainer, it writes after every ``interval`` epochs and when training completes, so a
    stopped run still leaves the latest backbone; writes are atomic and only on rank 0.

    Args:
        network: the module holding the backbone (DINO's teacher: ``MultiCropWrapper``).
        path: the output file, e.g. ``models/backbone.pt``.
        prefix: the backbone's key prefix inside ``network`` (``"backbone."``).
        interval: epochs between writes.
    """

    rank_zero_writer = True  # liverseg_monai.engines.distributed.rank_handlers leaves it to rank 0

    def __init__(self, network: nn.Module, path: str | os.PathLike, prefix: str = "backbone.", interval: int = 1):
        self.network = network
        self.path = Path(path)
        self.prefix = prefix
        self.interval = max(1, int(interval))

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine=None) -> None:
        if not _is_main_process():
            return
        from liverseg_monai.ssl.dino import unwrap

        save_backbone(unwrap(self.network), self.path, self.prefix)
        logger.info("wrote %s", self.path)


class EmbeddingWriter:
    """Write the embedding of every case an evaluator processes, plus a table and a map of them.

    Per case ``<output_dir>/<case>_embedding.npy`` (float32 ``(D,)``); when the run completes
    ``embeddings.csv`` (case, source image, ``.npy`` file, first two principal components) and
    ``embedding_map.png`` (each tile's thumbnail placed at its 2-D PCA position: similar tissue should
    gather). Rows are sorted by source image, so the table does not depend on the order cases ran in.
    All writes are atomic.

    Two modes:

    - ``sharded=False`` (``inference.json``): one run of the evaluator over all cases; every rank would
      see the same cases, so only rank 0 writes, and the table is written when the run completes.
    - ``sharded=True`` (``multi_gpu_inference.json`` under ``torchrun``): each rank has its own cases
      (:func:`liverseg_monai.engines.distributed.shard`) and writes their ``.npy`` files, so each case is
      written once; the records are kept across runs of the evaluator
      (:func:`liverseg_monai.engines.cohort.run_cohort` runs it once per case), and :meth:`finish`, which
      every rank must call at the end (``finalize``), gathers every rank's records and rank 0 writes the
      one table and map.

    Args:
        output_dir: where the files go.
        pred_key: key of the embedding in ``engine.state.output`` (``"pred"``, shape ``(D,)``).
        image_key: key whose metadata ``filename_or_obj`` names the source tile (``"image"``).
        map_name: file name of the map (``None``: no map).
        sharded: each rank processes its own cases (above).
    """

    def __init__(self, output_dir: str | os.PathLike, pred_key: str = "pred", image_key: str = "image",
                 map_name: str | None = "embedding_map.png", sharded: bool = False):
        self.output_dir = Path(output_dir)
        self.pred_key, self.image_key = pred_key, image_key
        self.map_name = map_name
        self.sharded = bool(sharded)
        self.records: list[dict] = []
        self.vectors: list[np.ndarray] = []

    def attach(self, engine) -> None:
        if not self.sharded:
            engine.add_event_handler(Events.STARTED, self._reset)
            engine.add_event_handler(Events.COMPLETED, self._finish)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._save)

    def _reset(self, engine=None) -> None:
        self.records, self.vectors = [], []

    def _save(self, engine) -> None:
        from liverseg_monai.io.atomic import atomic_path

        output = engine.state.output
        for item in output if isinstance(output, list) else [output]:
            image = item.get(self.image_key)
            source = str(getattr(image, "meta", {}).get("filename_or_obj", ""))
            case = Path(source).name.split(".")[0] or f"case{len(self.records):04d}"
            vec = item[self.pred_key]
            vec = (vec.detach().float().cpu().numpy() if isinstance(vec, torch.Tensor) else np.asarray(vec, np.float32))
            vec = vec.reshape(-1).astype(np.float32)
            if not (self.sharded or _is_main_process()):
                continue
            path = self.output_dir / f"{case}_embedding.npy"
            with atomic_path(path) as tmp:
                np.save(tmp, vec)
            self.records.append({"case": case, "image": source, "embedding": path.name})
            self.vectors.append(vec)

    def finish(self) -> None:
        """Write the table and map of every rank's cases on rank 0 (``sharded``); every rank must call it."""
        from liverseg_monai.engines.distributed import gather_lists

        pairs = gather_lists(list(zip(self.records, self.vectors)))
        self._write(pairs)

    def _finish(self, engine=None) -> None:
        if _is_main_process():
            self._write(list(zip(self.records, self.vectors)))

    def _write(self, pairs: list[tuple[dict, np.ndarray]]) -> None:
        if not _is_main_process() or not pairs:
            return
        from liverseg_monai.io.tables import write_table

        pairs = sorted(pairs, key=lambda pair: (pair[0]["image"], pair[0]["case"]))
        records = [rec for rec, _ in pairs]
        feats = np.stack([vec for _, vec in pairs])
        centred = feats - feats.mean(axis=0)
        if len(feats) > 1:
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            coords = centred @ vt[:2].T
        else:
            coords = np.zeros((1, 2))
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        rows = [{**rec, "pc1": f"{a:.6g}", "pc2": f"{b:.6g}"} for rec, (a, b) in zip(records, coords)]
        write_table(self.output_dir / "embeddings.csv", rows, ["case", "image", "embedding", "pc1", "pc2"])
        if self.map_name:
            write_embedding_map(self.output_dir / self.map_name, [r["image"] for r in records], coords)
        logger.info("wrote %d embeddings of dimension %d to %s", len(records), feats.shape[1], self.output_dir)


def write_embedding_map(path: str | os.PathLike, images: list[str], coords: np.ndarray, thumb: int = 48) -> None:
    """A PNG with each image's thumbnail at its 2-D coordinates (e.g. the first two principal components)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from liverseg_monai.io.atomic import atomic_path
    from liverseg_monai.ssl.data import read_rgb

    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    ax.scatter(coords[:, 0], coords[:, 1], s=4, c="grey")
    for src, (x, y) in zip(images, coords):
        try:
            rgb = read_rgb(src)
        except Exception:  # a source that is not a tile (e.g. a slide) is shown as a dot only
            continue
        step = max(1, max(rgb.shape[:2]) // thumb)
        ax.add_artist(AnnotationBbox(OffsetImage(rgb[::step, ::step], zoom=1.0), (x, y), frameon=False))
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(f"Tile embeddings (PCA), {len(coords)} tiles")
    pad = 0.15 * (np.ptp(coords, axis=0) + 1e-6)
    ax.set_xlim(coords[:, 0].min() - pad[0], coords[:, 0].max() + pad[0])
    ax.set_ylim(coords[:, 1].min() - pad[1], coords[:, 1].max() + pad[1])
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
