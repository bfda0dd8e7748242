"""obs-platform: tag early-years observations with the learning domains of a curriculum framework."""
