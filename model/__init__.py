"""The GPT model: `GPT(ModelConfig(...))`; knows nothing of optimizers or distribution."""

from model.config import PRESETS, ModelConfig
from model.gpt import GPT

__all__ = ["GPT", "ModelConfig", "PRESETS"]
