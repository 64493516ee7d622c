"""Slides: open a slide and find its resolution, detect tissue, lay the tile grid, preview it."""

from histo_encoders._lazy import lazy_exports

_EXPORTS = {
    "Slide": "slide",
    "SlideInfo": "slide",
    "open_slide": "slide",
    "slide_file_size": "slide",
    "SlidePlan": "plan",
    "plan_slide": "plan",
    "TileGrid": "tiling",
    "choose_level": "tiling",
    "plan_tiles": "tiling",
    "TissueMask": "tissue",
    "TissueSettings": "tissue",
    "detect_tissue": "tissue",
    "write_preview": "preview",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
