"""The Hydra configs shipped with the package (train.yaml, predict.yaml and their groups).

Docstrings and comments name files here as ``conf/<group>/<option>.yaml``.
"""

from pathlib import Path

#: This folder: where ``hydra.main`` and the compose API find train.yaml.
CONF_DIR = Path(__file__).resolve().parent
