"""Data of training, none of it learnt: the procedural face renderer with exact ground truth,
deterministic rendered and latent streams, augmentation, the annotators that measure generated
faces, and the words of the words method.

  renderer      faces with ground truth (face_drawing.py draws them)
  datasets      rendered batches, held-out faces, latents, each a pure function of its seed
  augment       geometric and colour jitter (the encoder's image cycle without a dataset)
  annotators    measured attributes of a face from its MTCNN landmarks and pixels
  lexicons      the words per attribute set
"""
