"""A character or word vocabulary: tokens <-> int64 ids, with ``<pad>`` = 0, ``<unk>`` = 1, ``<end>`` = 2."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import numpy as np

from rnnc.train.files import atomic_write

SPECIALS = ("<pad>", "<unk>", "<end>")
LEVELS = ("char", "word")
_FORMAT, _VERSION = "rnnc-vocab", 1


class Vocab:
    """Tokens and their ids. Ids 0, 1, 2 are ``<pad>`` (padding), ``<unk>`` (any unknown token) and ``<end>``
    (end of a sequence); the other tokens follow.

    Parameters
    ----------
    tokens : iterable of str
        The ordinary tokens, in id order (ids 3, 4, ...); no repeats, no special tokens.
    level : {"char", "word"}
        How text is split: into characters, or at whitespace (``str.split()``); decoding joins with ``""`` or
        ``" "`` accordingly.
    """

    def __init__(self, tokens: Iterable[str], level: str = "char"):
        if level not in LEVELS:
            raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
        self.level = level
        self.tokens = list(SPECIALS)
        for k, tok in enumerate(tokens):
            if not isinstance(tok, str) or not tok or tok in SPECIALS:
                raise ValueError(f"tokens[{k}]: expected a non-empty string other than {SPECIALS}, got {tok!r}")
            self.tokens.append(tok)
        self.ids = {tok: i for i, tok in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            dup = next(t for t, c in Counter(self.tokens).items() if c > 1)
            raise ValueError(f"tokens: expected each token once, got {dup!r} twice")

    pad_id, unk_id, end_id = 0, 1, 2

    @classmethod
    def build(cls, texts: Iterable[str], level: str = "char", min_count: int = 1, max_size: int | None = None):
        """The vocabulary of ``texts``: tokens seen at least ``min_count`` times, most frequent first (ties in
        sorted order), at most ``max_size`` of them (specials not counted). Deterministic."""
        counts = Counter()
        for text in texts:
            counts.update(cls.split(text, level))
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIALS),
                        key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size] if max_size is not None else ranked, level)

    @staticmethod
    def split(text: str, level: str) -> list[str]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        return list(text) if level == "char" else text.split()

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self.ids

    def encode(self, text: str, end: bool = False) -> np.ndarray:
        """Ids of ``text``'s tokens (``<unk>`` for unknown ones), then ``<end>`` if ``end``: an int64 array."""
        ids = [self.ids.get(tok, self.unk_id) for tok in self.split(text, self.level)]
        return np.array(ids + [self.end_id] * bool(end), dtype=np.int64)

    def decode(self, ids, stop_at_end: bool = True) -> str:
        """The text of ``ids``: ``<pad>`` is skipped; ``<end>`` stops decoding (or is skipped, without
        ``stop_at_end``); ``<unk>`` reads as ``<unk>``. ``decode(encode(s)) == s`` for a char vocabulary holding
        every char of ``s``, and for a word vocabulary up to whitespace (words joined by one space)."""
        out = []
        for k, i in enumerate(np.asarray(ids).reshape(-1).tolist()):
            if not isinstance(i, int) or not 0 <= i < len(self.tokens):
                raise ValueError(f"ids[{k}]: expected an id in 0..{len(self.tokens) - 1}, got {i!r}")
            if i == self.end_id and stop_at_end:
                break
            if i not in (self.pad_id, self.end_id):
                out.append(self.tokens[i])
        return ("" if self.level == "char" else " ").join(out)

    def save(self, path) -> None:
        """Write the vocabulary as JSON (``format``, ``version``, ``level``, ``tokens`` without the specials),
        atomically."""
        text = json.dumps({"format": _FORMAT, "version": _VERSION, "level": self.level,
                           "tokens": self.tokens[len(SPECIALS):]}, ensure_ascii=False)
        atomic_write(str(path), lambda f: f.write(text.encode("utf-8")), ".json")

    @classmethod
    def load(cls, path) -> Vocab:
        """Read a file written by :meth:`save`; refuses (one line naming the file and field) anything else."""
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: expected a JSON vocabulary, got unreadable text ({e})") from None
        if not isinstance(spec, dict) or spec.get("format") != _FORMAT:
            raise ValueError(f"{path}: format: expected {_FORMAT!r}, got "
                             f"{spec.get('format') if isinstance(spec, dict) else type(spec).__name__!r}")
        if spec.get("version") != _VERSION:
            raise ValueError(f"{path}: version: expected {_VERSION}, got {spec.get('version')!r}")
        tokens = spec.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError(f"{path}: tokens: expected a list of strings, got {type(tokens).__name__}")
        try:
            return cls(tokens, spec.get("level"))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"<Vocab {self.level}: {len(self)} tokens>"
