"""groundrt: edge inference runtime for Panoptic Narrative Grounding."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `groundrt.Grounder` without importing the runtime (onnxruntime, cv2) on `import groundrt`
    if name == "Grounder":
        from groundrt.runtime.grounder import Grounder

        return Grounder
    raise AttributeError(f"module 'groundrt' has no attribute {name!r}")
