"""Fine-tuning with knowledge distillation."""

from autocompress.training.distill import FineTuneLoss, distill_, kd_loss, recalibrate_batchnorm_, teacher_logits

__all__ = ["FineTuneLoss", "distill_", "kd_loss", "recalibrate_batchnorm_", "teacher_logits"]
