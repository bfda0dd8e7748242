"""The training entrypoint (`python -m trainer`), shared by local runs and Vertex AI custom jobs."""

import hashlib
from pathlib import Path


def source_fingerprint() -> str:
    """A hash of the trainer's own code: a model trained by other code is another recipe, even with the
    same hyper-parameters (the platform reuses a registered model only for the same data and recipe)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
