"""Make torchvision (the reference: torchvision.models.video.swin3d) importable beside the CPU torch: see rs_embed_core.testing.references."""

from rs_embed_core.testing.references import import_torchvision

import_torchvision()
