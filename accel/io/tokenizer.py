"""Text <-> token ids through Hugging Face `tokenizers` (tokenizer.json), plus streaming decode.

`Tokenizer.from_dir(model_dir)` reads `tokenizer.json` and finds the bos/eos ids in
`tokenizer_config.json`, `generation_config.json` or `config.json`, in that order. The models
package uses this class (it may import only accel), so everything tokenizer-specific lives here.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

from accel.core.errors import ModelError

_REPLACEMENT = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}", hint="it must be valid JSON") from None
    return found if isinstance(found, dict) else {}


def _token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as {"content": ...} objects."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Tokenizer:
    def __init__(self, backend, bos_id: int | None = None, eos_ids: Sequence[int] = (),
                 add_bos: bool = False):
        self.backend = backend          # tokenizers.Tokenizer
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.add_bos = add_bos          # prepend bos when the post-processor does not

    @classmethod
    def from_file(cls, path: str) -> "Tokenizer":
        """A tokenizer.json file, or a model directory holding one."""
        if os.path.isdir(path):
            return cls.from_dir(path)
        return cls(_load_backend(path))

    @classmethod
    def from_dir(cls, folder: str) -> "Tokenizer":
        backend = _load_backend(os.path.join(folder, "tokenizer.json"))
        tcfg = _read_json(os.path.join(folder, "tokenizer_config.json"))
        gen = _read_json(os.path.join(folder, "generation_config.json"))
        cfg = _read_json(os.path.join(folder, "config.json"))

        def token_id(key: str):
            text = _token_text(tcfg.get(key + "_token"))
            if text is not None and backend.token_to_id(text) is not None:
                return [backend.token_to_id(text)]
            for source in (gen, cfg):
                value = source.get(key + "_token_id")
                if value is not None:
                    return value if isinstance(value, list) else [value]
            return []

        bos = token_id("bos")
        return cls(backend, bos_id=bos[0] if bos else None, eos_ids=[int(e) for e in token_id("eos")],
                   add_bos=bool(tcfg.get("add_bos_token", False)))

    # --- encode / decode ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        require_text(text)
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream(self, prompt_ids: Sequence[int] = ()) -> "StreamDecoder":
        """An incremental decoder for tokens generated after `prompt_ids`."""
        return StreamDecoder(self, prompt_ids)


def require_text(text: str, what: str = "the text") -> str:
    """`text` if it is a str that can be written as UTF-8; else a ModelError saying where not."""
    if not isinstance(text, str):
        raise ModelError(f"{what} must be a str, got {type(text).__name__}",
                         hint="decode bytes first, e.g. data.decode('utf-8')")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: bytes that were not UTF-8 (argv, files)
        raise ModelError(f"{what} is not valid UTF-8: {exc.reason} at character {exc.start} "
                         f"(after {text[max(exc.start - 10, 0):exc.start]!r})",
                         hint="pass UTF-8 text; convert it first (e.g. iconv -t UTF-8)") from None
    return text


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive, never splitting a character.

    Decoding one token alone loses context (a leading space, half of a multi-byte character), so
    each step decodes a short window of preceding ids with and without the new ones and emits
    the difference once it no longer ends in an incomplete character (the method of TGI/vLLM).
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.ids = [int(i) for i in prompt_ids]
        self.prefix_offset = max(len(self.ids) - 6, 0)
        self.read_offset = len(self.ids)

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (may be empty)."""
        self.ids.append(int(token_id))
        decode = self.tokenizer.decode
        before = decode(self.ids[self.prefix_offset:self.read_offset])
        after = decode(self.ids[self.prefix_offset:])
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        decode = self.tokenizer.decode
        rest = decode(self.ids[self.prefix_offset:])[len(decode(self.ids[self.prefix_offset:self.read_offset])):]
        self.prefix_offset = self.read_offset = len(self.ids)
        return rest


def _load_backend(path: str):
    if not os.path.isfile(path):
        raise ModelError(f"tokenizer file not found: {path}",
                         hint="a model directory needs tokenizer.json (the Hugging Face `tokenizers` "
                              "format); convert others with transformers' AutoTokenizer.save_pretrained")
    try:
        from tokenizers import Tokenizer as _HF
    except ImportError:  # pragma: no cover - a core dependency
        raise ModelError("the `tokenizers` package is not installed",
                         hint="pip install tokenizers") from None
    try:
        return _HF.from_file(path)
    except Exception as exc:  # the library raises a plain Exception for malformed files
        raise ModelError(f"cannot load {path}: {exc}",
                         hint="tokenizer.json must be written by the `tokenizers` library") from None


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ("<s>", "</s>"),
                         bos: str | None = "<s>"):
    """A small byte-level BPE tokenizer (GPT-2/Llama-3 style) trained on `texts`.

    Byte-level means every string encodes (no unknown token). `bos`, when given, is prepended by
    the post-processor. Returns a `tokenizers.Tokenizer` (save it with `.save(path)`).
    """
    from tokenizers import Tokenizer as _HF, decoders, models, pre_tokenizers, processors, trainers

    tok = _HF(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok
