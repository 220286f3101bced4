"""Model files that ship inside the aiscan package (``default.onnx``)."""
