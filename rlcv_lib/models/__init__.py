"""Models: ViT encoder, decoder with KV cache, the shared encoder-decoder, size presets."""

from rlcv_lib.models.config import MODEL_PRESETS, MODEL_SIZES, ModelConfig
from rlcv_lib.models.decoder import Cache
from rlcv_lib.models.encdec import EncoderDecoder, build_model

__all__ = ["MODEL_PRESETS", "MODEL_SIZES", "Cache", "EncoderDecoder", "ModelConfig",
           "build_model"]
