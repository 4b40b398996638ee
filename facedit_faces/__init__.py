"""Face detection shared by the encoder service and training: MTCNN (facenet-pytorch's weights, shipped in
its wheel and exported to ONNX by `make setup`) on ONNX Runtime -> boxes, scores and five landmarks per face.

Separate from facedit_core because it needs ONNX Runtime; it imports facedit_core and nothing else of
ours, and never torch (an import-linter contract).
"""
