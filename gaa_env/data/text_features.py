"""A CPU-friendly text featuriser: 1024-d signed-hashing TF-IDF, implemented with numpy only.

The paper fed its Yelp and Healthcare MLPs (1024-10-2 and 1024-32-10) with 1024-d *sentence
embeddings* of the texts from a pretrained language model. Neither the embedding model nor the
embeddings are available offline, so the loaders here use this stand-in feature extractor with the
same dimension; accuracies are therefore not directly comparable to the paper's.

Recipe (fixed, so caches are reproducible — bump :data:`FEATURE_VERSION` if it changes):

1. tokenise: lowercase, words = maximal runs of ``[a-z0-9]`` with an optional ``'suffix``;
2. signed hashing trick: ``h = blake2b-64(token)``; bucket ``h mod dim``, sign ``+1`` if the top bit
   of ``h`` is 0 else ``-1`` (stable across processes, unlike Python's ``hash``);
3. sublinear tf ``1 + log(count)`` per (document, token);
4. idf per *token* fitted on the training corpus only: ``log((1 + N) / (1 + df)) + 1`` (tokens never
   seen in training get ``df = 0``);
5. ``x[bucket(t)] += sign(t) · tf · idf`` then L2-normalise each row (an empty text stays all zeros).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence
from hashlib import blake2b

import numpy as np

FEATURE_DIM = 1024
FEATURE_VERSION = 1
TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CHUNK_DOCS = 4096


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens of ``text``."""
    return TOKEN_RE.findall(text.lower())


def _to_ids(docs: Sequence[str], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of every document, concatenated, and the ``[n_docs + 1]`` offsets into them."""
    ids, offsets = array("q"), array("q", [0])
    for doc in docs:
        ids.extend([vocab.setdefault(t, len(vocab)) for t in tokenize(doc)])
        offsets.append(len(ids))
    return np.frombuffer(ids, dtype=np.int64), np.frombuffer(offsets, dtype=np.int64)


def hash_tokens(tokens: Sequence[str], dim: int = FEATURE_DIM) -> tuple[np.ndarray, np.ndarray]:
    """Bucket (``[0, dim)``) and sign (``±1``) of every token (step 2 of the recipe)."""
    hashes = np.array([int.from_bytes(blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                       for t in tokens], dtype=np.uint64)
    buckets = (hashes % np.uint64(dim)).astype(np.int64)
    signs = np.where((hashes >> np.uint64(63)) == 0, 1.0, -1.0)
    return buckets, signs


def _pair_counts(ids: np.ndarray, offsets: np.ndarray, n_vocab: int) -> tuple[np.ndarray, ...]:
    """Distinct (document, token) pairs of a corpus slice with their counts."""
    docs = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys, counts = np.unique(docs * n_vocab + ids, return_counts=True)
    return keys // n_vocab, keys % n_vocab, counts


def hashed_tfidf(corpora: Sequence[Sequence[str]], dim: int = FEATURE_DIM) -> list[np.ndarray]:
    """Featurise several corpora with the recipe above; idf is fitted on ``corpora[0]`` (training).

    Returns one ``float32 [len(corpus), dim]`` array per corpus, rows of unit L2 norm (or zero).
    """
    vocab: dict[str, int] = {}
    tokenized = [_to_ids(corpus, vocab) for corpus in corpora]
    n_vocab = max(len(vocab), 1)
    buckets, signs = hash_tokens(list(vocab), dim)
    train_ids, train_offsets = tokenized[0]
    n_train = len(train_offsets) - 1
    _, train_terms, _ = _pair_counts(train_ids, train_offsets, n_vocab)
    df = np.bincount(train_terms, minlength=n_vocab)
    idf = np.log((1.0 + n_train) / (1.0 + df)) + 1.0
    weight = signs * idf
    out = []
    for ids, offsets in tokenized:
        n_docs = len(offsets) - 1
        x = np.zeros((n_docs, dim), dtype=np.float32)
        for start in range(0, n_docs, _CHUNK_DOCS):
            stop = min(start + _CHUNK_DOCS, n_docs)
            chunk_offsets = offsets[start:stop + 1]
            doc, term, count = _pair_counts(ids[chunk_offsets[0]:chunk_offsets[-1]],
                                            chunk_offsets - chunk_offsets[0], n_vocab)
            values = weight[term] * (1.0 + np.log(count))
            block = np.bincount(doc * dim + buckets[term], weights=values, minlength=(stop - start) * dim)
            x[start:stop] = block.reshape(stop - start, dim)
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        np.divide(x, norms, out=x, where=norms > 0)
        out.append(x)
    return out
