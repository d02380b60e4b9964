"""AlexNet-style PCA lighting noise: shift colours along the RGB principal components."""

from __future__ import annotations

import torch

# Eigen-decomposition of the RGB covariance of ImageNet pixels (values in [0, 1]),
# the constants published with AlexNet and used by its common re-implementations.
EIGENVALUES = torch.tensor([0.2175, 0.0188, 0.0045])
EIGENVECTORS = torch.tensor(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


def add_lighting_noise(
    images: torch.Tensor, std: float, channel_std: tuple[float, float, float]
) -> torch.Tensor:
    """Lighting noise on a normalised batch (N x 3 x H x W): alpha ~ N(0, std) per image.

    The pixel-space shift sum_i alpha_i lambda_i v_i is divided by the normalisation std so
    that it lands where it would have before normalising.
    """
    if std <= 0:
        return images
    alpha = torch.randn(images.shape[0], 3) * std
    shift = (alpha * EIGENVALUES) @ EIGENVECTORS.T
    scale = torch.tensor(channel_std)
    return images + (shift / scale).view(-1, 3, 1, 1).to(images.device, images.dtype)
