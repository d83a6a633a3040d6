"""groundrt: edge inference runtime for Panoptic Narrative Grounding."""

__version__ = "0.1.0"
