"""The Gradio web demo over the edge runtime (no TensorFlow); install the ``demo`` extra."""
