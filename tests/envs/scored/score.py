"""The toy scorer (hidden): binds what it relies on, imports the editable module, scores the artefact."""
import json
import os
import sys
from pathlib import Path

import lib

loss = lib.loss  # bound before the editable module can replace it

import train  # noqa: E402, F401  (the model code: not run as __main__, so it does not train)

if lib.loss is not loss:
    print("idealab-tampered: lib.loss was replaced by the editable module")
    sys.exit(3)
x = json.loads(Path(os.environ["IDEALAB_ARTEFACT_DIR"], "model.json").read_text())["x"]
target = float(lib.data("val.txt").read_text())
print("@metric " + json.dumps({"name": "loss", "value": loss(x, target)}))
