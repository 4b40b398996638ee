"""Packs: what training hands to the services, and the way back.

  export             the `export` step: ONNX files, directions, tables, manifest, model card
  model_card         model_card.md from a manifest's figures
  restore            the `restore` step: a work folder from a built pack
  onnx_weights       an exported ONNX file's weights back in its torch network
  torchserve_export  a generator as a TorchServe archive
"""
