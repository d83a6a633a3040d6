"""Exceptions raised by groundrt: each names the bad input and what to do about it."""

from __future__ import annotations


class GroundrtError(Exception):
    """Base class of every error groundrt raises on purpose."""


class DataFormatError(GroundrtError, ValueError):
    """A dataset file is missing, unreadable or does not follow the PNG format."""


class PredictionFormatError(GroundrtError, ValueError):
    """A prediction file does not follow the groundrt prediction format."""


class TokenizerError(GroundrtError, ValueError):
    """A tokenizer model is missing or unreadable, or a caption / phrase span cannot be encoded."""


class CaptionTooLongError(TokenizerError):
    """A caption has more tokens than the text engine accepts; the caller decides to truncate."""

    def __init__(self, num_tokens: int, max_tokens: int, caption: str,
                 phrases: int | None = None) -> None:
        self.num_tokens = num_tokens
        self.max_tokens = max_tokens
        preview = caption if len(caption) <= 60 else caption[:57] + "..."
        if phrases is not None:  # explicit phrases, encoded as one list-like caption
            super().__init__(
                f"the {phrases} phrases take {num_tokens} tokens together (BOS and the "
                f"separators between them included), more than the limit of {max_tokens} "
                "tokens: give fewer or shorter phrases")
            return
        super().__init__(
            f"caption {preview!r} is {num_tokens} tokens long (BOS included), more than the "
            f"limit of {max_tokens} tokens: shorten the caption or truncate it")
