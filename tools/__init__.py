"""Tooling around the bundles, outside the installable library: ``python -m tools COMMAND``.

- ``demo`` (:mod:`tools.demo`): every bundle end to end on synthetic data, ``OUT/report.md``;
- ``bench`` (:mod:`tools.bench`): speed, memory and quality; ``bench/results.json`` and ``docs/benchmarks.md``;
- ``ablation-deeplab`` (:mod:`tools.ablation_deeplab`): the DeepLabV3+ ASPP / encoder-init ablation;
- ``research NAME`` (:mod:`tools.research`): the research scripts behind the model cards' figures.

Everything runs bundles through the one runner, :mod:`tools.runner`, with the recipes of
:mod:`tools.recipes`; :mod:`tools.ecosystem` holds the test harness around servers (Orthanc, MONAI
Label). The library (``liverseg_monai``) never imports this package.
"""
