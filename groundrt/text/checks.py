"""What a caption or a phrase must be before any part of groundrt reads it.

Any Python `str` is accepted except one holding a lone surrogate (U+D800..U+DFFF alone is not
text: it is what Python makes of bytes that are not UTF-8 on a command line, and it cannot be
encoded for the tokenizer), or one longer than MAX_TEXT_CHARS. Control characters and every
script pass (normalization removes what the tokenizer cannot use).
"""

from __future__ import annotations

import re

from groundrt.errors import TokenizerError

# Far above what the text engine takes (128 tokens); it bounds the work spent on one caption.
MAX_TEXT_CHARS = 10_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(value: object, what: str = "caption") -> str:
    """`value` if it is a str groundrt can encode; TypeError for another type, TokenizerError
    naming the problem otherwise. Never changes state: the next call is judged on its own."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise TokenizerError(f"{what} is {len(value)} characters long, more than the limit of "
                             f"{MAX_TEXT_CHARS}: shorten it")
    bad = _SURROGATE.search(value)
    if bad is not None:
        index = bad.start()
        raise TokenizerError(
            f"{what} holds a lone surrogate {bad.group()!r} at character {index} (near "
            f"{value[max(0, index - 20):index]!r}): not valid Unicode text, such as bytes that "
            "are not UTF-8 given on the command line or in a file")
    return value
