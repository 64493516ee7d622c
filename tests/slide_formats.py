"""Small slides in formats beyond SVS/TIFF, written for the tests (no file of theirs is vendored).

- DICOM-WSI: a series of ``.dcm`` files (one per pyramid level), VL Whole Slide Microscopy Image
  objects with TILED_FULL frames, written with pydicom following the DICOM standard (PS3.3
  A.32.8) and the fields OpenSlide's DICOM reader checks.
- Hamamatsu NDPI: a TIFF whose pages carry Hamamatsu's private tags (65420 format flag, 65421
  source lens, 65422/65423 offsets), one JPEG per level, as OpenSlide's Hamamatsu reader expects
  (https://openslide.org/formats/hamamatsu/).

The pixels are those of :func:`histo_encoders.tools.synthetic.render_region`, so tissue sits
where the synthetic SVS/TIFF slides put it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from histo_encoders.tools.synthetic import default_tissue_boxes, render_region

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def _level_pixels(width: int, height: int, mpp: float, downsample: int, seed: int) -> np.ndarray:
    boxes = default_tissue_boxes(width, height)
    level = render_region(0, 0, width, height, mpp=mpp, tissue_boxes=boxes, seed=seed)
    if downsample == 1:
        return level
    size = (max(1, width // downsample), max(1, height // downsample))
    return np.asarray(Image.fromarray(level).resize(size, Image.Resampling.BOX))


def write_dicom_series(
    folder: str | Path,
    *,
    width: int = 1024,
    height: int = 768,
    mpp: float = 0.5,
    tile: int = 256,
    downsamples: Sequence[int] = (1, 4),
    seed: int = 0,
) -> Path:
    """Write a DICOM-WSI series (one ``level<i>.dcm`` per level) into ``folder``; returns it."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    for index, downsample in enumerate(downsamples):
        pixels = _level_pixels(width, height, mpp, downsample, seed)
        rows, cols = pixels.shape[:2]
        across, down = -(-cols // tile), -(-rows // tile)
        padded = np.full((down * tile, across * tile, 3), 255, np.uint8)
        padded[:rows, :cols] = pixels
        frames = (
            padded.reshape(down, tile, across, tile, 3).swapaxes(1, 2).reshape(-1, tile, tile, 3)
        )

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = WSI_SOP_CLASS
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = WSI_SOP_CLASS
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Modality = "SM"
        ds.ImageType = ["ORIGINAL" if index == 0 else "DERIVED", "PRIMARY", "VOLUME", "NONE"]
        ds.InstanceNumber = index + 1
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.Rows, ds.Columns = tile, tile
        ds.NumberOfFrames = len(frames)
        ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = cols, rows
        ds.TotalPixelMatrixFocalPlanes = 1
        ds.DimensionOrganizationType = "TILED_FULL"
        spacing = Dataset()
        spacing.PixelSpacing = [mpp * downsample / 1000.0] * 2  # millimetres: row, column
        spacing.SliceThickness = 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = [spacing]
        ds.SharedFunctionalGroupsSequence = [shared]
        ds.PixelData = frames.tobytes()
        pydicom.dcmwrite(folder / f"level{index}.dcm", ds, enforce_file_format=True)
    return folder


def write_ndpi(
    path: str | Path,
    *,
    width: int = 1024,
    height: int = 768,
    mpp: float = 0.5,
    downsamples: Sequence[int] = (1, 4),
    seed: int = 0,
) -> Path:
    """Write a small Hamamatsu NDPI (one baseline JPEG strip per level); returns the path."""
    import tifffile

    path = Path(path)
    lens = round(10 / mpp)  # the scanner's objective, as NDPI records it
    resolution = (1e4 / mpp, 1e4 / mpp)  # pixels per centimetre
    with tifffile.TiffWriter(path) as tif:
        for downsample in downsamples:
            pixels = _level_pixels(width, height, mpp, downsample, seed)
            extratags = [
                (65420, "I", 1, 1, True),  # NDPI format flag
                (65421, "f", 1, float(lens), True),  # source lens (magnification)
                (65422, "i", 1, 0, True),  # x offset from the slide centre (nm)
                (65423, "i", 1, 0, True),  # y offset
                (65424, "i", 1, 0, True),  # z offset (focal plane)
            ]
            tif.write(
                pixels,
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 90},
                rowsperstrip=pixels.shape[0],
                resolution=resolution,
                resolutionunit="CENTIMETER",
                extratags=extratags,
                metadata=None,
            )
    return path
