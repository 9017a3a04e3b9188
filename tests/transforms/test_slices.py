import torch

from liverseg_monai.transforms.slices import stack_neighbour_slices


def test_neighbours_become_channels_clamped_at_the_ends():
    v = torch.arange(4.0).reshape(1, 1, 1, 4)
    out = stack_neighbour_slices(v, 1)
    assert out.shape == (3, 1, 1, 4)
    assert out[:, 0, 0, :].tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]]
    assert torch.equal(stack_neighbour_slices(v, 0), v)
