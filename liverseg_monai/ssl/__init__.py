"""Self-supervised pretraining of encoders on unlabelled images.

- :mod:`liverseg_monai.ssl.dino`: DINO (Caron et al. 2021) parts: ResNet backbone, projection head,
  multi-crop wrapper, loss with teacher centring and sharpening, EMA teacher, schedules, and the
  ``iteration_update`` for MONAI's ``SupervisedTrainer``.
- :mod:`liverseg_monai.ssl.augment`: multi-crop views with H&E stain jitter.
- :mod:`liverseg_monai.ssl.data`: reading tiles and random patches of whole-slide images.
- :mod:`liverseg_monai.ssl.handlers`: writing ``backbone.pt`` during training and tile embeddings.
- :mod:`liverseg_monai.ssl.knn`: k-NN classification of frozen features (the evaluation).

Submodules are imported by their full path (they pull in torch and MONAI).
"""
