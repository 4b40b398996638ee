"""facedit's core library: the rules every part of the project shares.

Pure Python + numpy + Pillow. Services, training and bench import it; it imports none of
them, nor grpc, torch or redis (an import-linter contract in `make test` checks this).

  errors     plain domain errors (each names its status, e.g. "INVALID_ARGUMENT")
  pack       the pack format: manifest, artefact names, reader with sha256 checks
  records    direction records, id prefixes, methods, strength meanings, limits, Redis keys
  latents    latents from seeds and their checks
  compose    edit composition with conditional projection (InterFaceGAN)
  reference  directions from reference latents and the strength-range rule (CRG)
  sphere     maths on the unit sphere of FaceNet embeddings (ISTRC)
  istrc_directions  ISTRC directions as registry records
  align      face alignment: landmarks -> crop, paste back
  images     image decoding and encoding with limits
"""
