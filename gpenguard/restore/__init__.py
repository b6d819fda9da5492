"""Face restoration with GPEN: detection, alignment, the generator, paste-back, image I/O.

The public entry point is `Restorer`; it loads its networks from ``.safetensors`` only.
"""

from __future__ import annotations

from gpenguard.restore.detect import Face
from gpenguard.restore.pipeline import Restoration, Restorer, RestorerWeights

__all__ = ["Face", "Restoration", "Restorer", "RestorerWeights"]
