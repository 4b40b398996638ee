"""model_card.md of any pack, written from its manifest's figures and its evaluation's (evaluation.json):
a section per step whose figures the pack holds (renderer packs and packs with measured attributes alike)."""
from __future__ import annotations

from pathlib import Path

from training.evaluation.real_faces_report import card_section


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(manifest: dict, path: Path, evaluation: dict | None = None, real_faces: dict | None = None) -> None:
    path.write_text(model_card(manifest, evaluation, real_faces))


def model_card(manifest: dict, evaluation: dict | None = None, real_faces: dict | None = None) -> str:
    """The card of any pack: each section is there when the manifest has its figures; `evaluation`:
    the evaluation's figures (evaluation.json; packs exported before it moved there: the manifest's
    metrics["evaluation"]); `real_faces`: {fidelity: report} of `python -m training evaluate-real`."""
    m, attrs = manifest["metrics"], manifest["attributes"]
    ev = evaluation if evaluation is not None else m.get("evaluation", {})
    parts = _header(manifest) + _training(manifest)
    if "annotate" in m:
        parts += _annotation(m["annotate"], attrs)
    if "reconstruction" in ev:
        parts += _reconstruction_rendered(ev, manifest["resolution"])
    if "oracle" in m:
        parts += _oracle(m["oracle"], attrs)
    parts += _directions(manifest)
    if "directions" in m:  # the combined directions step of earlier digiface64 versions
        parts += _legacy_directions(m["directions"], attrs)
    if "words" in m:
        parts += words_section(m["words"])
    if "methods" in ev:
        parts += evaluation_section(ev, attrs)
    if "reconstruction_generated" in ev:
        parts += _evaluation_measured(ev, manifest["training"]["config"])
    if "istrc" in m:
        parts += ["", *istrc_section(m["istrc"], attrs)]
    for report in (real_faces or {}).values():  # {fidelity: report} of evaluate-real
        parts += card_section(report, manifest["version"])
    parts += restored_section(manifest)
    if manifest.get("notes"):
        parts += ["", "## Looked at by eye", "", manifest["notes"]]
    return "\n".join(parts) + "\n"


def _header(manifest: dict) -> list[str]:
    src, r = manifest["source"], manifest["resolution"]
    return [f"# Pack `{manifest['pack']}` — version {manifest['version']}", "",
            f"Generator: {src['generator']}. Resolution {r}x{r}, latent z of {manifest['latent_dim']} ~ "
            f"{manifest['latent_prior']}. Licence: {src['licence']}.",
            f"Attributes: {', '.join(manifest['attributes'])} "
            f"(labels: {manifest['training']['config'].get('attributes', {}).get('source', 'renderer')}). "
            f"Default edit method: {manifest['default_method']}.", "",
            "All figures below were measured by `python -m training pack` (docs/training.md) and are",
            "copied from `manifest.json` and `evaluation.json`; nothing here is typed by hand."]


def _training(manifest: dict) -> list[str]:
    cfg, t = manifest["training"]["config"], manifest["training"].get("timings_s", {})
    rows = [[name, cfg[f"{key}_steps"], cfg[f"{key}_batch"], t.get(step)]
            for name, key, step in (("DCGAN", "gan", "gan"), ("CRG encoder", "encoder", "encoder"),
                                    ("oracle", "oracle", "oracle"))
            if step in t and f"{key}_steps" in cfg]
    return ["", "## Training", _table(["step", "steps", "batch", "seconds (2 cores)"], rows)] if rows else []


def _reconstruction_rendered(ev: dict, resolution: int) -> list[str]:
    rec, tg = ev["reconstruction"], ev.get("reconstruction_targets", {})
    return [
        "", f"Renderer speed: {ev['renderer_images_per_s']} images/s at {resolution}px (one process).",
        "", f"## Encoder reconstruction (held-out rendered faces, n={ev['held_out_samples']}; "
            f"hashes on {ev.get('hash_samples', 500)})",
        _table(["", "dhash", "phash", "whash", "MAE", "MSE"],
               [["this pack", rec["dhash"], rec["phash"], rec["whash"], rec["mae"], rec["mse"]]]
               + ([["target (CRG paper, CRG row)"] + [f"{tg[k]['target']}: {_mark(tg[k]['met'])}"
                                                      for k in ("dhash", "phash", "whash")] + ["-", "-"]]
                  if tg else [])),
        "", "Pixel values in [0, 1]; hash similarity = 1 - Hamming distance / 64.",
        f"Latent cycle MSE(z, E(G(z))): {ev['latent_cycle_mse']}.",
    ]


def _oracle(o: dict, attrs: list[str]) -> list[str]:
    if "mae" in o:  # trained on the renderer's ground truth
        return ["", f"## Attribute oracle (held-out rendered faces, n={o['held_out_samples']})",
                _table(["attribute", "accuracy", "MAE of value"], [[a, o["accuracy"][a], o["mae"][a]] for a in attrs]),
                "", "Continuous attributes (smile, blond_hair, yaw, age) are uniform in [0, 1], so some faces",
                "lie close to the 0.5 threshold where the label is ambiguous."]
    return ["", f"## Classifier (CNN on the annotations; {o['held_out_samples']} held-out faces)", "",
            _table(["attribute", "agreement with annotator (> median)", "correlation of probabilities"],
                   [[a, o["accuracy"][a], o["correlation"][a]] for a in attrs])]


def _directions(manifest: dict) -> list[str]:
    """InterFaceGAN, TL-GAN, SeFa and CRG, each when its step ran."""
    m, attrs = manifest["metrics"], manifest["attributes"]
    parts: list[str] = []
    if "interfacegan" in m:
        ig = m["interfacegan"]
        rows = [[a, ig["attributes"][a]["validation_accuracy"], ig["attributes"][a]["all_samples_accuracy"],
                 round(ig["attributes"][a]["recommended_strength"], 2)] for a in attrs]
        parts += ["", f"## InterFaceGAN directions ({ig['samples']} latents, top/bottom {ig['share']:.0%}, 70/30 split)",
                  _table(["attribute", "SVM val. acc.", "all-samples acc.", "recommended strength"], rows),
                  "", "Edit success, leakage and identity: see \"Evaluation against ground truth\" below.",
                  "", "Cosine between boundaries (rows/columns in attribute order):",
                  _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, ig["boundary_cosine"])])]
    if m.get("refine"):
        rf = m["refine"]
        strength = manifest["training"]["config"]["refine_strength"]
        terms = ("gain", "lip_darkening", "outside_ms", "others_ms")
        rows = [[a if key == "+" else "", f"{key}{strength:g}", f["region"] or "-", f["cosine_to_interfacegan"],
                 *[f"{f['interfacegan'][key][k]:.4g} -> {f['refined'][key][k]:.4g}" for k in terms]]
                for a, f in rf.items() for key in "+-"]
        parts += ["", "## Refined directions (InterFaceGAN's normal refined for photo pasting; docs/methods.md)",
                  "", "Held-out generated faces at the refine strength, InterFaceGAN -> refined: the attribute's "
                  "classifier logit gain, the upper lip's mean darkening, the mean squared luminance change outside "
                  "the region, the other attributes' mean squared logit change.", "",
                  _table(["attribute", "strength", "region", "cosine to InterFaceGAN", *terms], rows)]
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
        pictures = [f for f in manifest.get("figures", []) if f.startswith("tlgan_")]
        if pictures:
            parts += ["", *[f"![{f[:-4]}]({f})" for f in pictures]]
    if "sefa" in m:
        sf = m["sefa"]
        rows = [[c, sf["top_eigenvalues"][int(c)], max(e, key=lambda a: abs(e[a])),
                 " ".join(f"{a} {v:+.2f}" for a, v in e.items())] for c, e in sf["effects"].items()]
        parts += ["", f"## SeFa components (first generator layer, top {sf['components']})",
                  _table(["component", "eigenvalue", "label", "mean probability change at +strength (raw eigenvector; "
                          "exported rows are sign-corrected)"], rows),
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
                         f.get("single_pair_cosine", "-"), e.get("positive_after_plus", "-"),
                         e.get("negative_after_minus", "-")])
        refs = (f"{c['pairs']} rendered reference pairs" if c.get("references", "rendered pairs") == "rendered pairs"
                else f"up to {c['pairs']} + {c['pairs']} annotated faces as references")
        parts += ["", f"## CRG directions ({refs}, {c['eval_samples']} labelled faces projected)",
                  _table(["attribute", "positive projection", "negative projection", "range", "midpoint acc.",
                          "single-pair vs averaged cosine", "positive after +max", "negative after min"], rows)]
    return parts


def restored_section(manifest: dict) -> list[str]:
    """A line saying the pack was exported from a work folder restored from an earlier version."""
    restored = manifest["training"].get("restored")
    if not restored:
        return []
    return ["", f"This version was exported from a work folder restored from pack version {restored['version']} "
                "(`python -m training restore`): the networks, directions and figures of the steps not rerun "
                "after restoring are that version's."]


def words_section(w: dict) -> list[str]:
    """Words -> latent: per trained word (addition vs averaging) and how unseen synonyms land."""
    rows = [[word, f["attribute"], "+" if f["sign"] > 0 else "-", f"{f['theta']:.2f}", f["theta_positive_share"],
             f.get("addition_success", "-"), f.get("addition_leakage", "-"),
             f.get("averaging_success", "-"), f.get("averaging_leakage", "-"), f.get("averaging_latent_shift", "-")]
            for word, f in w["words"].items()]
    syn = [[u, f["trained_word"], f["glove_cosine"], f["latent_cosine"], f"{f['nearest_trained_word']} "
            f"({f['nearest_cosine']})", f["attribute"], f"{f['moves_attribute']:+.3f}",
            f"{f['target_word_moves_attribute']:+.3f}", f["most_moved"]] for u, f in w["synonyms"].items()]
    return ["", f"## Words -> latent (GloVe 6B-50d -> FC; {w['steps']} steps x {w['batch']} pairs of "
                f"{w['samples']} generated faces; {w['eval_samples']} held-out latents)",
            f"Loss (eq. 7) at the end: addition {w['final_loss_addition']}, averaging {w['final_loss_averaging']}; "
            f"without any edit {w['loss_without_edit']} (random pairs differ mostly in identity).",
            "theta: the documented strength, the 90th percentile of the projections of z2 - z1 on the unit word "
            "vector over pairs that differ in the word's sense (addition: z' = z + theta w/|w|). Success: held-out "
            "faces not in the word's state that are after the edit (oracle); leakage: share of the other "
            "labels that flip. Averaging edits z' = (z + E(w)) / 2 (eq. 1); its latent shift is |z' - z|.",
            _table(["word", "attribute", "sense", "theta", "share theta > 0", "addition success", "addition leakage",
                    "averaging success", "averaging leakage", "averaging latent shift"], rows),
            "", "Unseen words (never in a training pair): GloVe -> the trained FC mapping. Cosines of GloVe vectors "
                "and of the latent vectors to the trained word; mean oracle change of the attribute at the trained "
                "word's theta (signed in the word's sense), next to the trained word's own.",
            _table(["unseen word", "trained word", "GloVe cosine", "latent cosine", "nearest trained word",
                    "attribute", "moves it", "trained word moves it", "most moved attribute"], syn)]


def _mark(met) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[met]


def _with_target(target: dict | None) -> str:
    if not target or target.get("value") is None:
        return "-"
    return f"{target['value']:.3f} {_mark(target['met'])}"


def _accuracy(acc: dict, target: dict) -> str:
    if "validation_accuracy" in acc:
        return _with_target(target)
    return ", ".join(f"{k.replace('validation_', '')} {v:.3f}" for k, v in acc.items()) or "-"


def _f(entry: dict, key: str) -> str:
    if "error" in entry:
        return "error"
    v = entry.get(key)
    return "-" if v is None else f"{v:.3f}"


def evaluation_section(ev: dict, attrs: list[str]) -> list[str]:
    """Markdown of the ground-truth evaluation's figures (report.json "evaluation", renderer packs)."""
    refs = ev["references"]
    n = ev["samples"]
    reg = refs["regressor_accuracy"]
    parts = ["", "## Evaluation against ground truth (`python -m training evaluate`)", "",
             f"Held-out rendered faces no step was fitted on: {n['edit']} per method and attribute, encoded by the",
             "CRG encoder (\"encoded\", the services' path) and as many prior latents z ~ N(0, I) (\"prior\");",
             f"FaceNet on the first {n['identity_facenet']}; counterfactuals on {n['counterfactual']} identities.",
             "Labels are the oracle's (p > 0.5) on generated faces. Each face is moved to the other side at the",
             "direction's documented strength (+max if the attribute is absent, min if present).",
             "success = share whose edited label flips; leakage = share of the other five labels that change;",
             "keep = every other attribute held fixed (the edit projected off their directions, as the",
             "directions service does). Targets (issue 3) are judged on the encoded faces with keep;",
             f"whole run {ev.get('seconds', '-')} s.",
             "", "### Identity references",
             _table(["identity regressor (image -> 15 renderer identity params)", "MAE", "MAE of the mean",
                     "L2", "L2 of the mean"],
                    [[f"on {k} faces (n={v['samples']})", v["mae"], v["mean_predictor_mae"], v["l2"],
                      v["mean_predictor_l2"]] for k, v in reg.items()]),
             "",
             _table(["distance between", "FaceNet (unit sphere)", "identity params (regressor)"],
                    [["a face and its reconstruction G(E(x))", refs["facenet"]["reconstruction_vs_original"],
                      refs["identity_params"]["reconstruction_vs_original"]],
                     ["two different rendered identities", refs["facenet"]["different_identities"],
                      refs["identity_params"]["different_identities"]]]
                    + [[f"true counterfactual pair: {a} 0 vs 1 (same identity)",
                        refs["true_counterfactual"][a]["facenet"], refs["true_counterfactual"][a]["identity_params"]]
                       for a in attrs]),
             "", "### Counterfactual baselines (no method): encoded x0, compared with the true x1 (and back)",
             _table(["attribute", "no edit: MAE", "dhash", "phash", "whash", "reconstruction floor: MAE", "dhash",
                     "phash", "whash"],
                    [[a, *(refs["counterfactual_baseline"][a]["no_edit"][k] for k in ("mae", "dhash", "phash", "whash")),
                      *(refs["counterfactual_baseline"][a]["reconstruction"][k]
                        for k in ("mae", "dhash", "phash", "whash"))] for a in attrs])]
    for name, mf in ev["methods"].items():
        rows, t = [], mf["targets"]
        for a in [a for a in attrs if a in mf["attributes"]]:
            f = mf["attributes"][a]
            enc, pri, cf = f["encoded"], f["prior"], f["counterfactual"]
            cfp = cf.get("keep", {}) if "error" not in cf.get("keep", {"error": 1}) else cf.get("plain", {})
            rows.append([a, _accuracy(f["accuracy"], t[a]["boundary_accuracy"]),
                         f"{f['strength_min']:+.2f}..{f['strength_max']:+.2f}",
                         _f(enc["plain"], "success"), _f(enc["plain"], "leakage"),
                         _with_target(t[a]["edit_success_keep"]), _with_target(t[a]["leakage_keep"]),
                         f"{_f(pri['plain'], 'success')} / {_f(pri['plain'], 'leakage')}",
                         f"{_f(pri['keep'], 'success')} / {_f(pri['keep'], 'leakage')}",
                         _f(enc["plain"], "facenet_distance"), _f(enc["plain"], "identity_param_distance"),
                         " / ".join(_f(cfp, k) for k in ("mae", "dhash", "phash", "whash"))])
        pair_rows = [[p, _f(v["encoded"], "without_keep"), _f(v["encoded"], "with_keep"),
                      _mark(t["pairs_keep_lowers_leakage"].get(p, {}).get("met")),
                      _f(v["prior"], "without_keep"), _f(v["prior"], "with_keep")]
                     if "encoded" in v else [p, v.get("error", "-"), "-", "n/a", "-", "-"]
                     for p, v in mf["correlated_pairs"].items()]
        parts += ["", f"### {name}", mf.get("description", ""), "",
                  _table(["attribute", "accuracy (target >= 0.95)", "strength", "success", "leakage",
                          "success keep (>= 0.90)", "leakage keep (<= 0.10)", "prior: success / leakage",
                          "prior keep: success / leakage", "FaceNet dist.", "identity-param dist.",
                          "counterfactual keep: MAE / dhash / phash / whash"], rows),
                  "", "Correlated pairs: share of faces whose kept attribute's label changes "
                      "(target: keep lowers it).",
                  _table(["edit keep", "encoded: without keep", "encoded: with keep", "lowered",
                          "prior: without keep", "prior: with keep"], pair_rows)]
    return parts


def istrc_section(f: dict, attrs: list[str]) -> list[str]:
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
                 r["pixel_mae_random_pairs"], r["latent_mse"], r.get("rendered_faces_pixel_mae", "-")]]),
        "",
        f"Edits: constant steps of {f['step_length']} on the sphere; strength = radians walked (two random faces are",
        f"{f['pair_angle_mean']} rad apart). Success = share of faces whose oracle label flips (adding the attribute",
        "where the reconstruction lacks it, removing it where present); leakage = share of the other attributes'",
        "labels that change; identity = FaceNet L2 distance between the edited and the unedited reconstruction",
        f"(two random faces: {f['identity_distance_random_pairs']}); residual = the same walk applied as",
        f"z + M(e') - M(e) to the face's own latent (not in the paper). Documented strength {s_doc}.",
        _table(["attribute", "classifier val. acc.", *[f"success at {s}" for s in sweep], f"leakage at {s_doc}",
                f"identity at {s_doc}", "residual success", "residual leakage"], rows),
    ] + ([] if "mlp_classifiers" not in f else [
        "", "The paper's MLP classifiers on the same labels (evaluated as method `istrc_mlp` above):",
        _table(["attribute", "MLP layers", "width", "val. acc.", "train acc."],
               [[a, m["layers"], m["hidden"], m["validation_accuracy"], m["train_accuracy"]]
                for a, m in f["mlp_classifiers"].items() if a in attrs])])


# --------------------------------------------------------------------------- packs with measured attributes

def _annotation(ann: dict, attrs: list[str]) -> list[str]:
    return ["", f"## Annotation ({ann['found']} of {ann['samples']} generated faces found by MTCNN, "
                f"{ann['seconds']} s)",
            "", "Measurements are described in training/data/annotators.py; 'present' = above the median face.", "",
            _table(["attribute", "median", "IQR", "5th pct", "95th pct"],
                   [[a, round(s["median"], 3), round(s["iqr"], 3), round(s["p05"], 3), round(s["p95"], 3)]
                    for a, s in ann["stats"].items()]), "",
            "Correlation of the measurements:", "",
            _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, ann["correlation"])])]


def _legacy_directions(dirs: dict, attrs: list[str]) -> list[str]:
    """The figures of the one `directions` step (InterFaceGAN, TL-GAN, SeFa, CRG on the same scored
    latents) that packs built before the unified pipeline carry."""
    ig = dirs["interfacegan"]
    return ["", f"## Directions ({dirs['samples']} latents scored by the classifier)", "",
            _table(["attribute", "SVM val. acc.", "SVM all-samples acc.", "TL-GAN validation", "CRG midpoint acc.",
                    "CRG range"],
                   [[a, ig[a]["validation_accuracy"], ig[a]["all_samples_accuracy"],
                     ", ".join(f"{k} {v:.3f}" for k, v in dirs["tlgan"][a].items()),
                     dirs["crg"][a]["midpoint_accuracy"],
                     f"{dirs['crg'][a]['strength_min']:+.2f}..{dirs['crg'][a]['strength_max']:+.2f}"]
                    for a in attrs]), "",
            "Cosine between InterFaceGAN boundaries:", "",
            _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, dirs["boundary_cosine"])]),
            "", f"SeFa top eigenvalues: {dirs['sefa']['top_eigenvalues']}; aliases: {dirs['sefa']['aliases']}"]


def _evaluation_measured(ev: dict, cfg: dict) -> list[str]:
    """Markdown of the measured evaluation's figures (report.json "evaluation", annotator packs)."""
    g_, r_, lfw = ev["reconstruction_generated"], ev["reconstruction_real"], ev.get("reconstruction_real_lfw", {})
    edit_faces = min(300, cfg["eval_samples"])
    rows = [["generated (held out)", g_["samples"], g_["dhash"], g_["phash"], g_["whash"], g_["mae"], g_["mse"]],
            [f"real, aligned ({', '.join(r_['photos'])})", r_["samples"], r_["dhash"], r_["phash"], r_["whash"],
             r_["mae"], r_["mse"]]]
    if lfw.get("samples"):
        rows.append([f"real, aligned, gray 25x25 (skimage.data.lfw_subset: MTCNN found {lfw['samples']} of "
                     f"{lfw['tried']} LFW faces)", lfw["samples"], lfw["dhash"], lfw["phash"], lfw["whash"],
                     lfw["mae"], lfw["mse"]])
    return ["", "## Encoder reconstruction (CRG paper Table 2 format; pixels in [0, 1])", "",
            _table(["faces", "n", "dhash", "phash", "whash", "MAE", "MSE"], rows),
            "", "The LFW row compares luminance only, on the crop pixels that lie inside the 25x25 photo "
                "(outside, the reconstruction is given the photo's black frame); the faces are upsampled "
                "from 25 px, so they are blurrier than anything the encoder was trained on.",
            "", f"Latent cycle MSE(z, E(G(z))): {ev['latent_cycle_mse']}.", "",
            f"## Edit success ({edit_faces} held-out latents moved to the recommended extremes, scored by the "
            "classifier)", "",
            "ISTRC rows (radians walked on FaceNet's sphere, not a latent offset) use the first "
            "`eval_istrc_samples` of these faces (FaceNet per face is the slow part).", "",
            _table(["direction", "strength max", "faces", "present after +max", "absent after min",
                    "other labels changed after +max", "FaceNet distance after +max"],
                   [[k, v["strength_max"], v.get("faces", edit_faces), v["positive_after_plus"],
                     v["negative_after_minus"], v["leakage_after_plus"], v.get("identity_distance_after_plus", "-")]
                    for k, v in ev["edit_success"].items()]),
            "", f"FaceNet distance (unit embeddings, 160 px) for scale: between different generated faces "
                f"{ev['identity']['other_faces']}, between a generated face and its encoding "
                f"{ev['identity']['encoded_generated']}."]
