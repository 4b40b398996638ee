"""model_card.md of a pack, written from its manifest's figures."""
from __future__ import annotations

from pathlib import Path


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(manifest: dict, path: Path) -> None:
    m = manifest["metrics"]
    cfg = manifest["training"]["config"]
    t = manifest["training"]["timings_s"]
    attrs = manifest["attributes"]
    parts = [
        f"# Pack `{manifest['pack']}` — version {manifest['version']}",
        "",
        f"Generator: {manifest['source']['generator']}. Resolution {manifest['resolution']}x"
        f"{manifest['resolution']}, latent z of {manifest['latent_dim']} ~ {manifest['latent_prior']}.",
        f"Attributes: {', '.join(attrs)}. Default edit method: {manifest['default_method']}.",
        "",
        "All figures below were measured by `python -m training pack` (see the README) and are",
        "copied from `manifest.json`; nothing here is typed by hand.",
        "",
        "## Training",
        _table(["step", "steps", "batch", "seconds (2 cores)"],
               [["DCGAN", cfg["gan_steps"], cfg["gan_batch"], t.get("gan")],
                ["CRG encoder", cfg["encoder_steps"], cfg["encoder_batch"], t.get("encoder")],
                ["oracle", cfg["oracle_steps"], cfg["oracle_batch"], t.get("oracle")]]),
    ]
    if "evaluation" in m:
        ev = m["evaluation"]
        rec = ev["reconstruction"]
        parts += [
            "", f"Renderer speed: {ev['renderer_images_per_s']} images/s at {manifest['resolution']}px (one process).",
            "", f"## Encoder reconstruction (held-out rendered faces, n={ev['held_out_samples']}; hashes on 500)",
            _table(["dhash", "phash", "whash", "MAE", "MSE"],
                   [[rec["dhash"], rec["phash"], rec["whash"], rec["mae"], rec["mse"]]]),
            "", "Pixel values in [0, 1]; hash similarity = 1 - Hamming distance / 64.",
            f"Latent cycle MSE(z, E(G(z))): {ev['latent_cycle_mse']}.",
        ]
    if "oracle" in m:
        o = m["oracle"]
        parts += ["", f"## Attribute oracle (held-out rendered faces, n={o['held_out_samples']})",
                  _table(["attribute", "accuracy", "MAE of value"],
                         [[a, o["accuracy"][a], o["mae"][a]] for a in attrs]),
                  "", "Continuous attributes (smile, blond_hair, yaw, age) are uniform in [0, 1], so some faces",
                  "lie close to the 0.5 threshold where the label is ambiguous."]
    if "interfacegan" in m:
        ig = m["interfacegan"]
        ev = m.get("evaluation", {}).get("edit_success", {})
        rows = []
        for a in attrs:
            f = ig["attributes"][a]
            e = ev.get(a, {})
            rows.append([a, f["validation_accuracy"], f["all_samples_accuracy"], round(f["recommended_strength"], 2),
                         e.get("positive_after_plus", "-"), e.get("negative_after_minus", "-")])
        parts += ["", f"## InterFaceGAN directions ({ig['samples']} latents, top/bottom {ig['share']:.0%}, 70/30 split)",
                  _table(["attribute", "SVM val. acc.", "all-samples acc.", "recommended strength",
                          "positive after +s", "negative after -s"], rows),
                  "", "Cosine between boundaries (rows/columns in attribute order):",
                  _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, ig["boundary_cosine"])])]
    if "tlgan" in m:
        t = m["tlgan"]
        along = t["probability_along_axis"]
        parts += ["", f"## TL-GAN feature axes ({t['samples']} latents, {t['model']} regression)",
                  _table(["attribute", "validation", *[f"p at {s:+g}" for s in along["strengths"]]],
                         [[a, ", ".join(f"{k} {v:.3f}" for k, v in t["validation"][a].items()), *along[a]]
                          for a in attrs]),
                  "", "Lock attributes with `keep` (Gram-Schmidt of the edited axis against the kept axes, at request",
                  "time). Cosine between the raw axes:",
                  _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, t["cosine_before"])])]
    if "sefa" in m:
        sf = m["sefa"]
        rows = [[c, sf["top_eigenvalues"][int(c)], max(e, key=lambda a: abs(e[a])),
                 " ".join(f"{a} {v:+.2f}" for a, v in e.items())] for c, e in sf["effects"].items()]
        parts += ["", f"## SeFa components (first generator layer, top {sf['components']})",
                  _table(["component", "eigenvalue", "label", "mean probability change at +strength (raw eigenvector; exported rows are sign-corrected)"], rows),
                  "", f"Aliases `sefa/<attribute>` (effect >= 0.2): {sf['attribute_aliases']}"]
    if "crg" in m:
        c = m["crg"]
        rows = []
        for a in attrs:
            f = c["attributes"][a]
            e = f.get("edit_success", {})
            rows.append([a, f"{f['positive_mean']:+.2f} ± {f['positive_std']:.2f}",
                         f"{f['negative_mean']:+.2f} ± {f['negative_std']:.2f}",
                         f"{f['strength_min']:+.2f}..{f['strength_max']:+.2f}", f["midpoint_accuracy"],
                         f["single_pair_cosine"], e.get("positive_after_plus", "-"), e.get("negative_after_minus", "-")])
        parts += ["", f"## CRG directions ({c['pairs']} rendered reference pairs, {c['eval_samples']} labelled faces projected)",
                  _table(["attribute", "positive projection", "negative projection", "range", "midpoint acc.",
                          "single-pair vs averaged cosine", "positive after +max", "negative after min"], rows)]
    if "istrc" in m:
        parts += ["", *_istrc_section(m["istrc"], attrs)]
    path.write_text("\n".join(parts) + "\n")


def _istrc_section(f: dict, attrs: list[str]) -> list[str]:
    """ISTRC: reconstruction through the FaceNet circle, classifiers, edits at each strength."""
    r, s_doc = f["reconstruction"], f"{f['documented_strength']:g}"
    sweep = list(f["edits"][attrs[0]])
    rows = []
    for a in attrs:
        e, c = f["edits"][a], f["classifiers"][a]
        d = e[s_doc]
        rows.append([a, c["validation_accuracy"], *[e[s]["success"] for s in sweep], d["leakage"],
                     d["identity_distance"], d.get("residual_success", "-"), d.get("residual_leakage", "-")])
    return [
        f"## ISTRC (FaceNet embedding space; {f['samples']} training pairs, held-out n={r['samples']})",
        f"FaceNet (CASIA-WebFace Inception-ResNet-v1, 512-d unit embeddings) sees each face at {f['upsampling']}.",
        f"Mapping embedding -> z: {f['layers']} Linear layers of width {f['hidden']} (BatchNorm + tanh between,",
        f"linear output for the N(0, I) latent), {f['steps']} Adam steps, loss MSE(z) + {f['image_weight']} x image MAE.",
        "",
        "Reconstruction through the circle (face -> FaceNet -> mapping -> generator):",
        _table(["embedding cosine to the start", "same, two random faces", "pixel MAE", "same, two random faces",
                "latent MSE", "rendered faces pixel MAE"],
               [[r["embedding_cosine"], r["embedding_cosine_random_pairs"], r["pixel_mae"],
                 r["pixel_mae_random_pairs"], r["latent_mse"], r["rendered_faces_pixel_mae"]]]),
        "",
        f"Edits: constant steps of {f['step_length']} on the sphere; strength = radians walked (two random faces are",
        f"{f['pair_angle_mean']} rad apart). Success = share of faces whose oracle label flips (adding the attribute",
        "where the reconstruction lacks it, removing it where present); leakage = share of the other attributes'",
        "labels that change; identity = FaceNet L2 distance between the edited and the unedited reconstruction",
        f"(two random faces: {f['identity_distance_random_pairs']}); residual = the same walk applied as",
        f"z + M(e') - M(e) to the face's own latent (not in the paper). Documented strength {s_doc}.",
        _table(["attribute", "classifier val. acc.", *[f"success at {s}" for s in sweep], f"leakage at {s_doc}",
                f"identity at {s_doc}", "residual success", "residual leakage"], rows),
    ]
