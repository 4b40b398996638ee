"""Face detection shared by the encoder service and training: MTCNN (facenet-pytorch's weights,
shipped in its wheel) -> boxes, scores and five landmarks per face.

Separate from facedit_core because it needs torch; it imports facedit_core and nothing else
of ours.
"""
