"""One slide, planned: open it, find tissue, lay the tile grid. The pipeline and training both
start from here, so a slide is tiled the same way whoever reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from histo_encoders.slides.slide import SlideInfo, open_slide
from histo_encoders.slides.tiling import TileGrid, plan_tiles
from histo_encoders.slides.tissue import TissueMask, TissueSettings, detect_tissue


@dataclass(frozen=True, eq=False)
class SlidePlan:
    """What a slide is (``info``), where its tissue is (``tissue``) and which tiles to read
    (``grid``)."""

    info: SlideInfo
    tissue: TissueMask
    grid: TileGrid


def plan_slide(
    path: str | Path,
    target_mpp: float,
    tile_size: int,
    *,
    tissue: TissueSettings | None = None,
    slide_mpp: float | None = None,
    preview_path: str | Path | None = None,
) -> SlidePlan:
    """Open the slide at ``path``, detect tissue and plan ``tile_size`` px tiles at
    ``target_mpp`` keeping those at least ``tissue.min_tissue`` tissue.

    ``slide_mpp`` overrides the resolution the file records; ``preview_path`` also writes the
    thumbnail / tissue / grid PNG there. Raises the errors of :func:`open_slide`,
    :func:`plan_tiles` and SlideReadError when the low-resolution level cannot be decoded.
    """
    tissue = tissue or TissueSettings()
    with open_slide(path, mpp=slide_mpp) as slide:
        mask = detect_tissue(slide, tissue)
        grid = plan_tiles(
            slide.info, target_mpp, tile_size, tissue_mask=mask, min_tissue=tissue.min_tissue
        )
        if preview_path is not None:
            from histo_encoders.slides.preview import write_preview

            write_preview(slide, mask, grid, preview_path)
        return SlidePlan(slide.info, mask, grid)
