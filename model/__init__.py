"""The model contract that scanner, train, export and benchmarks share, and that no one
of them owns: the labels and the one logits -> p_ai (:mod:`.meta`), the preprocessing
definition (:mod:`.preprocessing`), the metadata an ONNX model carries about itself and
its reading and writing (:mod:`.meta`), and the one factory of timm models
(:mod:`.factory`). It imports no other aiscan package.
"""
