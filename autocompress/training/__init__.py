"""Fine-tuning with knowledge distillation."""

from autocompress.training.distill import distill_, kd_loss, recalibrate_batchnorm_, teacher_logits

__all__ = ["distill_", "kd_loss", "recalibrate_batchnorm_", "teacher_logits"]
