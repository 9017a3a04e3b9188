"""Networks (one file per model) built from blocks in ``liverseg_monai.networks.blocks``.

Importing this package imports torchvision, which registers its custom operators (the deformable
convolution) so TorchScript models that use them can be loaded.
"""

import torchvision  # noqa: F401  (registers torchvision::deform_conv2d and friends for torch.jit.load)
