"""The ranges numeric inputs are checked against, one place for config.json and the command line.

Nothing here imports anything: the command line checks its flags with these before loading torch.
"""

# Tile side in pixels: smaller tiles hold no cell; larger ones no encoder takes.
TILE_SIZE_RANGE = (8, 8192)
# Microns per pixel, as plausible for a slide (slides.slide.MPP_RANGE) and so for an encoder.
MPP_RANGE = (0.05, 20.0)
# Tiles per batch and reader processes.
BATCH_SIZE_RANGE = (1, 65536)
WORKERS_RANGE = (0, 256)
