"""Measuring a pack's methods.

  edits         every edit method behind one signature edit(z, attribute, strength, keep)
  ground_truth  the `evaluate` step of renderer packs: every method against the renderer's truth
  measured      the `evaluate` step of annotator packs: reconstruction of generated and real faces,
                edit success scored by the classifier
  similarity    image error and perceptual-hash similarity
  identity      the identity regressor of the ground-truth evaluation
  leakage       `python -m training.evaluation.leakage`: a quick check on an exported pack
  plots         pictures for the model card
  real_faces    `python -m training evaluate-real`: a built pack on real photos, edits measured on the
                returned photo; the pluggable inversion (INVERSIONS: fast, ...)
  real_faces_report  its figures per split, tables, contact sheets, the model card's section
"""
