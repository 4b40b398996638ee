"""The attribute source of a pack's config (`attributes.source`): which attributes the pack has,
where their labels come from and how the direction records name the scorer of generated faces.

- "renderer": the renderer's ground truth (training/data/renderer.py ATTRIBUTES); the oracle
  learns it from rendered faces; present = the true value > 0.5.
- "annotators": measurements of generated faces (training/data/annotators.py ATTRIBUTES, the
  `annotate` step); the oracle learns them; present = above the median annotated face.
"""
from __future__ import annotations

import dataclasses

from training.config import PackConfig
from training.data import annotators, renderer

RENDERER, ANNOTATORS = "renderer", "annotators"


@dataclasses.dataclass(frozen=True)
class AttributeSource:
    name: str
    attributes: tuple[str, ...]
    scorer: str       # what scored the generated faces a direction was found on (record provenance)
    labels: str       # what "present" means (model card)


SOURCES = {
    RENDERER: AttributeSource(
        RENDERER, tuple(renderer.ATTRIBUTES), "classifier.onnx (oracle)",
        "the renderer's ground truth (training/data/renderer.py), learnt by the oracle; present = value > 0.5"),
    ANNOTATORS: AttributeSource(
        ANNOTATORS, tuple(annotators.ATTRIBUTES), "classifier.onnx (CNN trained on the MTCNN-based annotators)",
        "measurements of generated faces (training/data/annotators.py), learnt by a CNN classifier; "
        "present = above the median annotated face"),
}


def source(cfg: PackConfig) -> AttributeSource:
    return SOURCES[cfg.attributes["source"]]


def attributes(cfg: PackConfig) -> tuple[str, ...]:
    """The pack's attributes, in the order of the oracle's outputs."""
    return source(cfg).attributes


def has_ground_truth(cfg: PackConfig) -> bool:
    """True when faces with known attributes (and true counterfactuals) can be rendered."""
    return cfg.attributes["source"] == RENDERER
