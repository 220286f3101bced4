"""The model contract that scanner, train, export and benchmarks share, and that no one
of them owns: the labels and the one logits -> p_ai (:mod:`.meta`), the preprocessing
definition (:mod:`.preprocessing`), the metadata an ONNX model carries about itself and
its reading and writing (:mod:`.meta`), and the one factory of timm models
(:mod:`.factory`). It imports no other aiscan package.
"""

import os as _os

# ONNX Runtime's official Linux builds collect telemetry and keep a device identifier in
# the user's cache (~/.cache/Microsoft/DeveloperTools/.onnxruntime), warning on stderr
# where that cannot be written. aiscan turns it off before any ONNX Runtime environment
# exists (ORT_DISABLE_TELEMETRY, read once per process); a value the user set is kept.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
