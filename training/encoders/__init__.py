"""Encoders into the generator's latent space and into FaceNet's embedding space.

  crg_encoder    the CRG encoder (faces -> z), trained against the frozen generator
  facenet        FaceNet on small faces (faces -> unit embeddings) and its distance
  istrc_mapping  ISTRC's mapping (FaceNet embeddings -> z)
"""
