"""Knowledge distillation from the uncompressed model: soft targets at a temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened outputs, scaled by T^2 (Hinton et al.)."""
    t = temperature
    log_student = F.log_softmax(student_logits.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t
