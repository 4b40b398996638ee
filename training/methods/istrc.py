"""ISTRC (Li & Wang, "Image Semantic Transformation: Faster, Lighter and Stronger"): edit faces
in FaceNet's embedding space (the unit sphere) and map the result back into the generator.

The circle: face pixels -> FaceNet embedding e (512,) with |e| = 1 -> edit / blend / arithmetic
on the sphere -> mapping M: e -> z (N(0, I) latent of our generator) -> G(z) -> face.

- FaceNet: the real CASIA-WebFace Inception-ResNet-v1 ported to PyTorch
  (training/third_party/facenet_port.py); it takes 160x160 faces. The synth generator makes 32x32
  faces, so every face is first brought to the pack resolution and then upsampled to 160 px with
  `facedit_core.images.resize` (PIL bicubic) - the same function the encoder service uses, so
  training and serving see the same pixels (training/encoders/facenet.py `embed`). The 32 px
  faces are far below what FaceNet was trained on (aligned real faces); how much identity its
  embedding still carries is what the figures below measure.
- Mapping M (paper section 5.2, training/encoders/istrc_mapping.py): `istrc_layers` Linear layers,
  BatchNorm1d and tanh between, linear output (z ~ N(0, I) is unbounded). Trained on
  (FaceNet(G(z)), z) pairs with MSE(M(e), z) (the paper's loss), optionally plus
  `istrc_image_weight` x MAE(G(M(e)), G(z)) through the frozen generator (default 0: the
  generator's backward pass made the step ~30x slower on this shared machine).
- Classifiers: one logistic regression per attribute on e, labels = the pack's oracle on G(z)
  (probability > 0.5), 70/30 split. Linear, so the logit's gradient is the constant w (stored
  as istrc_classifiers.npy: serving needs no torch). The paper uses 4-7 FC layers on CelebA;
  the synth attributes are separated well enough by a linear model (see validation accuracy).
  With `istrc_mlp_layers` > 0 the paper's MLP classifiers (FC layers, tanh) are trained beside
  them on the same labels (`MlpClassifiers`, in istrc.pt; report "mlp_classifiers"): their
  gradient changes along the walk, so `Istrc.load(cfg, work, "mlp")` takes it at every step
  (torch autograd); the evaluation measures them as method `istrc_mlp`. Packs serve the
  logistic ones (a constant direction per attribute, the registry's `istrc/<attribute>`).
- Edit (paper section 3.4): `facedit_core.sphere.walk`: steps of constant length
  `istrc_step` along the classifier gradient projected on the sphere's tangent plane,
  renormalised after each step. **Strength** = signed path length on the sphere, in radians:
  |s| / istrc_step steps, s > 0 raises the attribute's logit, s < 0 lowers it; each step turns e
  by atan(step) ~ step, so a strength of 1 walks about one radian (57 degrees; two random synth
  faces are about `pair_angle_mean` apart). `keep`: the kept attributes' gradients are projected
  off the step (conditional manipulation on the sphere).
- Blend / average / arithmetic: `facedit_core.sphere` (slerp, Karcher mean, a - b + c with
  parallel transport).

Outputs: <work>/istrc.pt (mapping + classifiers), <work>/istrc_pairs.npz (the embeddings, kept so
that a rerun does not recompute FaceNet), report.json "istrc". CLI: `python -m training istrc`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from facedit_core import sphere
from training import checkpoints
from training.config import PackConfig
from training.data.datasets import held_out, latents
from training.encoders.facenet import EMBEDDING, SIZE, UPSAMPLING, embed  # noqa: F401 (SIZE: for export)
from training.encoders.istrc_mapping import Mapping, build, train_mapping
from training.generators import gan
from training.labels import oracle, source
from training.models import generate
from training.progress import Progress

CHECKPOINT = "istrc.pt"
PAIRS = "istrc_pairs.npz"
_LATENT_SEED = 8        # training pairs
_EVAL_SEED = 9          # held-out latents of the evaluation


# --------------------------------------------------------------------------- data, training

def pairs(cfg: PackConfig, work: Path, g, o) -> dict[str, np.ndarray]:
    """(z, e = FaceNet(G(z)), oracle probabilities of G(z)) for `istrc_samples` latents; cached in
    <work>/istrc_pairs.npz (recomputed when the config's count or seed changes)."""
    path = work / PAIRS
    z = latents(cfg.seed + _LATENT_SEED, cfg.istrc_samples, cfg.latent_dim)
    if path.exists():
        with np.load(path, allow_pickle=False) as cached:
            if cached["z"].shape == z.shape and np.array_equal(cached["z"], z):
                return {k: cached[k] for k in ("z", "e", "y")}
    pixels = generate(g, z)
    y = oracle.predict(o, pixels)
    e = embed(pixels, cfg.istrc_facenet_runtime, progress="istrc facenet")
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, z=z, e=e, y=y)
    tmp.replace(path)
    return {"z": z, "e": e, "y": y}


def labels(cfg: PackConfig, y: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Oracle probabilities (N, A) -> classifier labels (N, A) bool and the rule of each attribute:
    probability > 0.5, or (every training face on one side, e.g. the barely trained oracle of a
    smoke-test config) above its median, as InterFaceGAN's top/bottom share."""
    n_train = int(len(y) * cfg.svm_train_split)
    out, rules = np.zeros(y.shape, bool), []
    for i, a in enumerate(source.attributes(cfg)):
        lab, rule = y[:, i] > 0.5, "oracle probability > 0.5"
        if lab[:n_train].all() or not lab[:n_train].any():
            lab, rule = y[:, i] > np.median(y[:n_train, i]), "oracle probability > its median (one class at 0.5)"
            if lab[:n_train].all() or not lab[:n_train].any():
                raise ValueError(f"istrc: the oracle gives every one of {n_train} faces the same {a!r} score")
        out[:, i] = lab
        rules.append(rule)
    return out, rules


def fit_classifiers(cfg: PackConfig, e: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Logistic regression per attribute: e (N, 512), y (N, A) probabilities ->
    weights (A, 512), biases (A,), figures (validation accuracy, class shares)."""
    n_train = int(len(e) * cfg.svm_train_split)
    weights, biases, figures = [], [], {}
    all_labels, rules = labels(cfg, y)
    for i, a in enumerate(source.attributes(cfg)):
        lab, rule = all_labels[:, i], rules[i]
        clf = LogisticRegression(C=cfg.istrc_classifier_c, max_iter=5000).fit(e[:n_train], lab[:n_train])
        weights.append(clf.coef_[0])
        biases.append(clf.intercept_[0])
        figures[a] = {"validation_accuracy": round(float(clf.score(e[n_train:], lab[n_train:])), 4),
                      "train_accuracy": round(float(clf.score(e[:n_train], lab[:n_train])), 4),
                      "positive_share": round(float(lab.mean()), 4), "labels": rule,
                      "weight_norm": round(float(np.linalg.norm(clf.coef_[0])), 3)}
    return np.stack(weights).astype(np.float32), np.asarray(biases, np.float32), figures


class MlpClassifiers(nn.Module):
    """The paper's attribute classifiers on embeddings: per attribute `layers` Linear layers (tanh
    between, one logit out), e (N, 512) -> logits (N, A). Non-linear, so the walk asks for the
    gradient of a logit at every step (`gradient`)."""

    def __init__(self, attributes: int, hidden: int, layers: int, embedding: int = EMBEDDING):
        super().__init__()
        if layers < 2:
            raise ValueError("istrc_mlp_layers must be 0 (no MLP) or >= 2")

        def one() -> nn.Sequential:
            blocks: list[nn.Module] = []
            width = embedding
            for _ in range(layers - 1):
                blocks += [nn.Linear(width, hidden), nn.Tanh()]
                width = hidden
            return nn.Sequential(*blocks, nn.Linear(width, 1))

        self.heads = nn.ModuleList(one() for _ in range(attributes))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(e) for h in self.heads], dim=1)

    def gradient(self, i: int, e: np.ndarray) -> np.ndarray:
        """d logit_i / d e at one embedding e (512,) -> (512,) float64."""
        x = torch.tensor(np.asarray(e, np.float32)[None], requires_grad=True)
        (g,) = torch.autograd.grad(self.heads[i](x).sum(), x)
        return g[0].double().numpy()


def fit_mlp_classifiers(cfg: PackConfig, e: np.ndarray, y: np.ndarray) -> tuple[MlpClassifiers, dict]:
    """MLP classifiers on the same labels and 70/30 split as the logistic ones (BCE, Adam) ->
    (model in eval mode, figures per attribute)."""
    n_train = int(len(e) * cfg.svm_train_split)
    lab, rules = labels(cfg, y)
    torch.manual_seed(cfg.seed + _LATENT_SEED + 1)
    net = MlpClassifiers(lab.shape[1], cfg.istrc_mlp_hidden, cfg.istrc_mlp_layers)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.istrc_lr)
    et, yt = torch.from_numpy(e[:n_train]), torch.from_numpy(lab[:n_train].astype(np.float32))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    progress = Progress("istrc mlp classifiers", cfg.istrc_mlp_steps, every=max(1, cfg.istrc_mlp_steps // 5))
    net.train()
    for step in range(cfg.istrc_mlp_steps):
        idx = torch.randint(0, len(et), (min(cfg.istrc_batch, len(et)),), generator=gen)
        loss = F.binary_cross_entropy_with_logits(net(et[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.update(step, bce=loss.item())
    net.eval()
    with torch.no_grad():
        predicted = (net(torch.from_numpy(e)) > 0).numpy()
    figures = {a: {"validation_accuracy": round(float((predicted[n_train:, i] == lab[n_train:, i]).mean()), 4),
                   "train_accuracy": round(float((predicted[:n_train, i] == lab[:n_train, i]).mean()), 4),
                   "labels": rules[i], "layers": cfg.istrc_mlp_layers, "hidden": cfg.istrc_mlp_hidden}
               for i, a in enumerate(source.attributes(cfg))}
    return net, figures


# --------------------------------------------------------------------------- the trained circle

class Istrc:
    """A trained ISTRC circle for a work folder: generator, FaceNet, mapping, classifiers."""

    EMBEDDED_MAX = 100_000  # latents whose embedding `edit` remembers (512 floats each)

    def __init__(self, cfg: PackConfig, g, mapping: Mapping, weights: np.ndarray, biases: np.ndarray,
                 mlp: MlpClassifiers | None = None):
        """mlp: when given, edits walk the MLP classifiers' gradients instead of the logistic w."""
        self.cfg, self.g, self.mapping = cfg, g, mapping.eval()
        self.weights, self.biases = weights.astype(np.float64), biases.astype(np.float64)
        self.mlp = mlp.eval() if mlp is not None else None
        self.attributes = list(source.attributes(cfg))
        self._embedded: dict[bytes, np.ndarray] = {}  # z row bytes -> FaceNet(G(z))

    @classmethod
    def load(cls, cfg: PackConfig, work: Path, classifier: str = "logistic") -> "Istrc":
        """classifier "logistic" (what packs serve) or "mlp" (needs istrc_mlp_layers > 0 at training)."""
        state = checkpoints.load(work / CHECKPOINT)
        m = build(cfg)
        m.load_state_dict(state["mapping"])
        mlp = None
        if classifier == "mlp":
            if "mlp" not in state:
                raise ValueError(f"{work / CHECKPOINT} has no MLP classifiers; train with istrc_mlp_layers > 0")
            mlp = MlpClassifiers(len(state["weights"]), state["mlp_hidden"], state["mlp_layers"])
            mlp.load_state_dict(state["mlp"])
        elif classifier != "logistic":
            raise ValueError(f"classifier must be 'logistic' or 'mlp', got {classifier!r}")
        return cls(cfg, gan.load_generator(cfg, work), m, state["weights"].numpy(), state["biases"].numpy(), mlp)

    @staticmethod
    def has_mlp(work: Path) -> bool:
        return (work / CHECKPOINT).exists() and "mlp" in checkpoints.load(work / CHECKPOINT)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return embed(pixels, self.cfg.istrc_facenet_runtime)

    @torch.no_grad()
    def to_latent(self, e: np.ndarray) -> np.ndarray:
        """Embeddings (N, 512) -> z (N, D) float32."""
        return self.mapping(torch.from_numpy(np.array(e, np.float32))).numpy()

    def logits(self, e: np.ndarray) -> np.ndarray:
        """(N, 512) -> classifier logits (N, A)."""
        return np.asarray(e, np.float64) @ self.weights.T + self.biases

    def walk(self, e: np.ndarray, attribute: str, strength: float, keep: tuple[str, ...] = ()) -> np.ndarray:
        """One embedding (512,) edited by `strength` radians on `attribute` (see module docstring).
        With MLP classifiers the edit and kept gradients are taken at every step."""
        i = self.attributes.index(attribute)
        k = [self.attributes.index(a) for a in keep]
        if self.mlp is not None:
            kept = (lambda x: np.stack([self.mlp.gradient(j, x) for j in k])) if k else None
            out, _ = sphere.walk(e, lambda x: self.mlp.gradient(i, x), strength, self.cfg.istrc_step, kept)
            return out
        out, _ = sphere.walk(e, lambda _: self.weights[i], strength, self.cfg.istrc_step,
                             self.weights[k] if k else None)
        return out

    def embed_latents(self, z: np.ndarray) -> np.ndarray:
        """z (N, D) -> FaceNet(G(z)) (N, 512), remembered per latent (the evaluation edits the same
        faces for every attribute and mode; FaceNet is the slow part)."""
        z = np.ascontiguousarray(np.atleast_2d(z), np.float32)
        keys = [row.tobytes() for row in z]
        missing = [i for i, k in enumerate(keys) if k not in self._embedded]
        if missing:
            e = self.embed(generate(self.g, z[missing]))
            if len(self._embedded) + len(missing) > self.EMBEDDED_MAX:
                self._embedded.clear()
            self._embedded.update((keys[i], row) for i, row in zip(missing, e))
        return np.stack([self._embedded[k] for k in keys])

    def edit(self, z: np.ndarray, attribute: str, strength: float, keep: tuple[str, ...] = ()) -> np.ndarray:
        """z (N, D) -> z' (N, D): each face through the circle G -> FaceNet -> walk -> M.
        (The hook for the per-method evaluation: edit(z, attribute, strength, keep) -> z'.)"""
        e = self.embed_latents(z)
        return self.to_latent(np.stack([self.walk(x, attribute, strength, tuple(keep)) for x in e]))


# --------------------------------------------------------------------------- evaluation

def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)


def evaluate(cfg: PackConfig, work: Path, model: Istrc, o) -> dict:
    """Figures on held-out faces: reconstruction through the circle, edit success, leakage and
    identity distance of edits."""
    n = cfg.istrc_eval_samples
    z = latents(cfg.seed + _EVAL_SEED, n, cfg.latent_dim)
    px = generate(model.g, z)
    e = model.embed(px)
    z_hat = model.to_latent(e)
    px_hat = generate(model.g, z_hat)
    e_hat = model.embed(px_hat)
    rng = np.random.default_rng(cfg.seed)
    other = rng.permutation(n)
    other = np.where(other == np.arange(n), (other + 1) % n, other)
    recon = {
        "samples": n,
        "embedding_cosine": round(float((e * e_hat).sum(1).mean()), 4),
        "embedding_cosine_random_pairs": round(float((e * e[other]).sum(1).mean()), 4),
        "pixel_mae": round(_mae(px, px_hat), 4),
        "pixel_mae_random_pairs": round(_mae(px, px[other]), 4),
        "latent_mse": round(float(((z - z_hat) ** 2).mean()), 4),
    }
    if source.has_ground_truth(cfg):  # rendered faces, which the generator did not make, through the circle
        rendered, _ = held_out(n, cfg.resolution, cfg.correlated_attributes)
        recon["rendered_faces_pixel_mae"] = round(_mae(rendered, generate(model.g, model.to_latent(model.embed(rendered)))), 4)
    pair_angle = float(np.arccos(np.clip((e * e[other]).sum(1), -1, 1)).mean())

    # edits start from the circle's own reconstruction (what the gateway shows as "before")
    y0 = oracle.predict(o, px_hat) > 0.5
    y_orig = oracle.predict(o, px) > 0.5
    s_doc = cfg.istrc_strength
    sweep = sorted({*cfg.istrc_strength_sweep, s_doc})
    attrs = model.attributes
    edits = {}
    for i, a in enumerate(attrs):
        sign = np.where(y0[:, i], -1.0, 1.0)  # add the attribute where absent, remove it where present
        per = {}
        for s in sweep:
            e_new = np.stack([model.walk(x, a, sg * s) for x, sg in zip(e, sign)])
            px_new = generate(model.g, model.to_latent(e_new))
            y1 = oracle.predict(o, px_new) > 0.5
            others = [j for j in range(len(attrs)) if j != i]
            row = {"success": round(float((y1[:, i] != y0[:, i]).mean()), 4),
                   "leakage": round(float((y1[:, others] != y0[:, others]).mean()), 4),
                   "arc_mean": round(float(np.arccos(np.clip((e * e_new).sum(1), -1, 1)).mean()), 4)}
            if s == s_doc:
                # the same edit applied as a residual to the face's own latent: z + M(e') - M(e)
                # (keeps what the mapping loses; not in the paper)
                sign_orig = np.where(y_orig[:, i], -1.0, 1.0)
                e_res = np.stack([model.walk(x, a, sg * s) for x, sg in zip(e, sign_orig)])
                y_res = oracle.predict(o, generate(model.g, z + model.to_latent(e_res) - z_hat)) > 0.5
                row["residual_success"] = round(float((y_res[:, i] != y_orig[:, i]).mean()), 4)
                row["residual_leakage"] = round(float((y_res[:, others] != y_orig[:, others]).mean()), 4)
                e_out = model.embed(px_new)
                row["identity_distance"] = round(float(np.linalg.norm(e_out - e_hat, axis=1).mean()), 4)
                row["identity_distance_to_original"] = round(float(np.linalg.norm(e_out - e, axis=1).mean()), 4)
            per[f"{s:g}"] = row
        edits[a] = per
    random_identity = round(float(np.linalg.norm(e_hat - e_hat[other], axis=1).mean()), 4)
    return {"reconstruction": recon, "pair_angle_mean": round(pair_angle, 4), "documented_strength": s_doc,
            "edits": edits, "identity_distance_random_pairs": random_identity}


# --------------------------------------------------------------------------- the step

def train(cfg: PackConfig, work: Path) -> dict:
    t0 = time.perf_counter()
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    data = pairs(cfg, work, g, o)
    t_pairs = time.perf_counter() - t0
    mapping, t_map = train_mapping(cfg, g, data["z"], data["e"], cfg.seed + _LATENT_SEED)
    weights, biases, cls_figures = fit_classifiers(cfg, data["e"], data["y"])
    state = {"mapping": mapping.state_dict(), "weights": torch.from_numpy(weights), "biases": torch.from_numpy(biases)}
    mlp_figures = None
    if cfg.istrc_mlp_layers:
        mlp, mlp_figures = fit_mlp_classifiers(cfg, data["e"], data["y"])
        state.update(mlp=mlp.state_dict(), mlp_layers=cfg.istrc_mlp_layers, mlp_hidden=cfg.istrc_mlp_hidden)
    checkpoints.save(work / CHECKPOINT, state)
    model = Istrc(cfg, g, mapping, weights, biases)
    t1 = time.perf_counter()
    figures = evaluate(cfg, work, model, o)
    figures.update({
        "samples": cfg.istrc_samples, "steps": cfg.istrc_steps, "layers": cfg.istrc_layers,
        "hidden": cfg.istrc_hidden, "image_weight": cfg.istrc_image_weight,
        "image_batch": cfg.istrc_image_batch, "step_length": cfg.istrc_step,
        "upsampling": UPSAMPLING, "classifiers": cls_figures,
        **({"mlp_classifiers": mlp_figures} if mlp_figures else {}),
        "seconds": {"pairs": round(t_pairs, 1), "mapping": round(t_map, 1),
                    "evaluation": round(time.perf_counter() - t1, 1)},
    })
    checkpoints.record(work, "istrc", figures)
    r = figures["reconstruction"]
    print(f"[istrc] reconstruction: embedding cosine {r['embedding_cosine']} (random pairs "
          f"{r['embedding_cosine_random_pairs']}), pixel MAE {r['pixel_mae']} (random pairs "
          f"{r['pixel_mae_random_pairs']}), rendered faces MAE {r.get('rendered_faces_pixel_mae', '-')}", flush=True)
    for a in source.attributes(cfg):
        d = figures["edits"][a][f"{cfg.istrc_strength:g}"]
        print(f"[istrc] {a:12s} classifier val acc {cls_figures[a]['validation_accuracy']:.3f}  edit at "
              f"{cfg.istrc_strength:g}: success {d['success']:.3f} leakage {d['leakage']:.3f} identity "
              f"{d['identity_distance']:.3f}", flush=True)
    return figures
