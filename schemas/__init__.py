"""The bundled JSON Schemas (draft-07), shipped inside the installed package."""

from importlib.resources import files
from importlib.resources.abc import Traversable

VERSION = "v1"


def schema_file(name: str) -> Traversable:
    """`schemas/v1/<name>.json`, from the source tree or the installed wheel alike."""
    return files(__name__) / VERSION / f"{name}.json"
