"""The edit methods' training steps: each writes a direction set into <work>/directions/.

  direction_sets  saving and collecting direction records (facedit_core.records.DirectionRecord)
  interfacegan    linear SVM boundaries            tlgan    regression axes
  sefa            generator eigenvectors           crg      encoded reference differences
  words           GloVe -> FC word vectors         istrc    FaceNet-sphere walks + mapping
"""
