"""The embedding pipeline: options, the encoder on its device, tiles to features for one slide,
feature files with their provenance, and runs over many slides (torchrun included)."""

from histo_encoders._lazy import lazy_exports

_EXPORTS = {
    "SlideEmbedding": "embed",
    "embed_prepared": "embed",
    "embed_slide": "embed",
    "embed_tiles": "embed",
    "prepare_encoder": "embed",
    "run_settings": "embed",
    "target_geometry": "embed",
    "FINGERPRINT_ATTR": "features",
    "count_tiles": "features",
    "is_complete": "features",
    "read_features": "features",
    "write_features": "features",
    "EncoderSpec": "inference",
    "PreparedEncoder": "inference",
    "TileBatch": "inference",
    "resolve_device": "inference",
    "resolve_precision": "inference",
    "EmbedOptions": "options",
    "RunSettings": "provenance",
    "SlideIdentity": "provenance",
    "SlideProvenance": "provenance",
    "fingerprint_of": "provenance",
    "SLIDE_EXTENSIONS": "run",
    "collect_slides": "run",
    "embed_slides": "run",
    "output_path": "run",
    "RunSummary": "summary",
    "SlideResult": "summary",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
