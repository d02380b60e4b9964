"""Leading singular subspaces of a matrix, computed once and reused for ranks and factors."""

from __future__ import annotations

import torch


def left_singular(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left singular vectors and squared singular values of `matrix`, in float64, largest first.

    Returns (U, s2) with U of shape (m, k), k = min(m, n). A wide matrix goes through the
    eigen-decomposition of its small Gram matrix A A^T; a tall one through QR and the SVD of
    the small triangular factor, so no full SVD of the large side is ever formed.
    """
    a = matrix.detach().to(torch.float64)
    m, n = a.shape
    if m <= n:
        eigenvalues, vectors = torch.linalg.eigh(a @ a.T)
        order = torch.arange(m - 1, -1, -1, device=a.device)
        return vectors[:, order], eigenvalues[order].clamp_min(0)
    q, r = torch.linalg.qr(a)
    u_small, s, _ = torch.linalg.svd(r)
    return q @ u_small, s.square()


def squared_singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Squared singular values of `matrix` in float64, largest first (no vectors)."""
    a = matrix.detach().to(torch.float64)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
