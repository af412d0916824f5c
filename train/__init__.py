"""Training the VGG16 transfer model (imports Keras; install the ``train`` extra)."""
