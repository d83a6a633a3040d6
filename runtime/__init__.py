"""Runtime: the Grounder API, backends, streams and the command line."""

from pathlib import Path

# The shipped default model package (the INT8 student), installed with the wheel.
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default"
