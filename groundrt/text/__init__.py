"""Caption text for the text engine: the sentencepiece tokenizer and phrase token spans."""

from groundrt.text.tokenizer import (
    MODEL_FILENAME,
    CaptionTooLongError,
    Encoding,
    Tokenizer,
    TokenizerError,
    train_tokenizer,
)

__all__ = [
    "MODEL_FILENAME", "CaptionTooLongError", "Encoding", "Tokenizer", "TokenizerError",
    "train_tokenizer",
]
