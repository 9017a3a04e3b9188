"""Auto3DSeg algorithm class of the ``segresnetvae`` template.

Auto3DSeg imports ``segresnetvae.scripts.algo.SegresnetvaeAlgo`` (folder name, capitalised, + ``Algo``)
from the templates folder given as ``templates_path_or_url``. The logic lives in
``liverseg_monai.ecosystem.auto3dseg``; this class only connects it to ``BundleAlgo``.
"""

from __future__ import annotations

import os

from monai.apps.auto3dseg import BundleAlgo
from monai.bundle import ConfigParser

from liverseg_monai.ecosystem.auto3dseg import fill_hyper_parameters


class SegresnetvaeAlgo(BundleAlgo):
    """SegResNetVAE (3D, VAE-regularised) as a ``BundleAlgo``; ``fill_template_config`` sets data-dependent values."""

    def fill_template_config(self, data_stats_file: str, output_path: str, **kwargs) -> dict:
        if not self.data_list_file or not os.path.exists(str(self.data_list_file)):
            raise ValueError(f"Auto3DSeg input config not found: {self.data_list_file}")
        if not data_stats_file or not os.path.exists(str(data_stats_file)):
            raise ValueError(f"Auto3DSeg data statistics not found: {data_stats_file}")
        stats = ConfigParser(globals=False)
        stats.read_config(data_stats_file)
        input_config = ConfigParser.load_config_file(str(self.data_list_file))
        filled = fill_hyper_parameters(stats, input_config, output_path, int(kwargs.pop("fold", 0)))

        config_file = os.path.join(output_path, "configs", "hyper_parameters.yaml")
        parser = ConfigParser(globals=False)
        parser.read_config(config_file)
        for key, value in filled.items():
            parser[key] = value
        ConfigParser.export_config_file(parser.get(), config_file, fmt="yaml", default_flow_style=None, sort_keys=False, width=120)
        return {"hyper_parameters.yaml": filled}
