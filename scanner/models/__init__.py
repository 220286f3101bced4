"""Model files that ship inside the aiscan package: ``clip-b16-head.onnx`` (the default:
a head that :func:`aiscan.scanner.core.models.resolve_model` joins to the CLIP encoder) and
``fast.onnx`` (the EfficientNet ensemble, whole)."""
