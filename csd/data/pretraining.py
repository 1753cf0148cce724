"""The pretraining-corpus term of Table 2: lm_coef · CE on plain text (OpenWebText), as MiniLLM/DistiLLM's
`--lm-data-dir`. Here only the data: the trainer adds the term (csd/train.py, `train.lm_data`, `train.lm_coef`).

    corpus = PretrainingBatches.from_config(load_data_config("openwebtext"), tokenizer, chunk_length=512,
                                            batch_size=8, seed=10, process=0, processes=1)
    batch = corpus.next_batch()   # {input_ids, attention_mask, labels}: (batch_size, chunk_length), all tokens targets

Documents (JSONL, one ``{"text": ...}`` per line) are tokenised without special tokens, joined with EOS
between them and cut into `chunk_length`-token chunks (the last partial chunk dropped), as MiniLLM's
processed openwebtext/<model>/512 data. Every position is a target (labels = input_ids; the trainer's shift
makes it chunk_length − 1 targets per chunk). Chunks are visited in a fixed permutation per pass over the
corpus, seeded by (seed, pass); each micro-batch takes the next `processes × batch_size` chunks and this
process its own slice, so a resumed run (state = chunks consumed) continues with the same chunks.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from csd.data.sources import DatasetFormatError, as_plain_dict, iter_jsonl, missing_dataset_message, split_file

TOKENISE_BATCH = 1000  # documents per tokenizer call


def read_texts(path, text_key: str, max_documents: int | None) -> Iterator[str]:
    """Texts of a JSONL file, streamed line by line (the corpus may be large); errors name file:line."""
    count = 0
    for record, where in iter_jsonl(path):
        if max_documents is not None and count >= max_documents:
            return
        if not isinstance(record.get(text_key), str):
            raise DatasetFormatError(f"{where}: expected an object with a text field {text_key!r}")
        count += 1
        yield record[text_key]


def tokenised_corpus(texts: Iterator[str], tokenizer) -> torch.Tensor:
    """All documents as one 1-D int32 tensor: doc₁ EOS doc₂ EOS …"""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to separate pretraining documents")
    pieces, pending = [], []

    def flush():
        for ids in tokenizer(pending, add_special_tokens=False)["input_ids"]:
            pieces.append(torch.tensor(ids + [tokenizer.eos_token_id], dtype=torch.int32))
        pending.clear()

    for text in texts:
        pending.append(text)
        if len(pending) == TOKENISE_BATCH:
            flush()
    if pending:
        flush()
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int32)


class PretrainingBatches:
    def __init__(self, chunks: torch.Tensor, batch_size: int, seed: int, process: int = 0, processes: int = 1):
        if chunks.shape[0] < batch_size * processes:
            raise ValueError(f"the pretraining corpus has {chunks.shape[0]} chunks, fewer than one micro-batch "
                             f"takes ({batch_size} × {processes} processes)")
        self.chunks, self.batch_size, self.seed = chunks, batch_size, seed
        self.process, self.processes = process, processes
        self.consumed = 0  # chunks taken by all processes together
        self._order = (None, None)  # (pass, permutation) of the latest pass used

    @classmethod
    def from_config(cls, data_cfg: Any, tokenizer, *, chunk_length: int, batch_size: int, seed: int,
                    process: int = 0, processes: int = 1) -> "PretrainingBatches":
        cfg = as_plain_dict(data_cfg)
        path = split_file(cfg, "train")
        if not path.exists():
            raise FileNotFoundError(missing_dataset_message(cfg, "train", path))
        tokens = tokenised_corpus(read_texts(path, cfg.get("text_key", "text"), cfg.get("max_examples")), tokenizer)
        usable = tokens.numel() // chunk_length * chunk_length
        return cls(tokens[:usable].view(-1, chunk_length), batch_size, seed, process, processes)

    def order(self, corpus_pass: int) -> torch.Tensor:
        if self._order[0] != corpus_pass:
            generator = torch.Generator().manual_seed(self.seed * 1000 + corpus_pass)
            self._order = (corpus_pass, torch.randperm(self.chunks.shape[0], generator=generator))
        return self._order[1]

    def next_batch(self) -> dict:
        count = self.chunks.shape[0]
        start = self.consumed + self.process * self.batch_size
        positions = range(start, start + self.batch_size)
        indices = [int(self.order(p // count)[p % count]) for p in positions]
        self.consumed += self.processes * self.batch_size
        input_ids = self.chunks[indices].long()
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])
