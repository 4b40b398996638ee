"""The peer-style baseline of the benchmark: eager PyTorch, one face at a time.

The networks are `training.models` modules filled from the pack's ONNX files
(`training.onnx_weights`, which explains how the folded BatchNorms come back).
"""
from __future__ import annotations

import numpy as np
import torch

from training.models import Encoder, Generator, images_to_pixels, pixels_to_images


class PeerEditor:
    """One face at a time, eager PyTorch, as a research repository's edit script does it:
    image -> encoder -> z + delta -> generator -> image."""

    def __init__(self, generator: Generator, encoder: Encoder, delta: np.ndarray):
        self.generator, self.encoder = generator.eval(), encoder.eval()
        self.delta = torch.from_numpy(np.asarray(delta, np.float32))[None]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(R, R, 3) uint8 -> edited (R, R, 3) uint8."""
        with torch.no_grad():
            z = self.encoder(pixels_to_images(torch.from_numpy(np.array(pixels))[None]))  # decoded arrays are read-only
            return images_to_pixels(self.generator(z + self.delta))[0].numpy()
