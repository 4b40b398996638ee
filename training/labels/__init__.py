"""Where a pack's attribute labels come from, and the classifier (the "oracle") that learns them.

The pack config's `attributes.source` says which: "renderer" (the renderer's ground truth) or
"annotators" (measurements of generated faces). Every method and evaluation asks `source` for
the attribute names and scores faces with the oracle, so the same code serves every pack.

  source    the attribute source of a config: names, provenance
  annotate  the `annotate` step: detect and measure generated faces (annotator packs)
  oracle    the `oracle` step, and scoring faces and latents with it
"""
