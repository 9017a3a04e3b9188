"""``InferClass`` (the name Auto3DSeg's ``BundleAlgo.get_inferer`` loads): probabilities for the ensembler."""

from __future__ import annotations

from collections.abc import Sequence

import fire

from liverseg_monai.ecosystem.auto3dseg import Predictor


class InferClass:
    def __init__(self, config_file: str | Sequence[str] | None = None, **override):
        self.predictor = Predictor(config_file, **override)

    def infer(self, image_file):
        """Softmax probabilities ``(C, *spatial)`` of ``image_file`` (path or ``{"image": path}``), original grid."""
        return self.predictor(image_file)


def run(config_file: str | Sequence[str], image_file: str, **override):
    return InferClass(config_file, **override).infer(image_file).shape


if __name__ == "__main__":
    fire.Fire()
