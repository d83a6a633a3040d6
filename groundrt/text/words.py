"""Basic words: how the PNG data and the tokenizer both cut a caption (BERT's basic tokenizer).

Runs of letters/digits are words; every punctuation or symbol character is a word of its own.
Only `re` is needed, so the runtime can use it without the data package.
"""

from __future__ import annotations

import re

WORD_PATTERN = re.compile(r"[^\W_]+|[^\w\s]|_")
