"""Content embeddings for the cold-start fallback: TF-IDF over genre, tag and title-word tokens,
reduced by truncated SVD, L2-normalised (float32 [n_items + 1, Dc], row 0 = padding = zeros).

Tokens are namespaced (`genre:drama`, `tag:pixar`, `word:toy`) so a genre and a title word that
happen to share a spelling stay distinct. Items with no tokens at all get a zero row.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from training.data.dataset import Dataset

DEFAULT_DIM = 64
_WORD = re.compile(r"[a-z0-9]+")
_YEAR_SUFFIX = re.compile(r"\(\s*\d{4}\s*\)\s*$")
_STOPWORDS = frozenset({"a", "an", "and", "the", "of", "in", "on", "to", "for", "la", "le", "les"})
_NO_GENRE = "(no genres listed)"


def _genres(value: object) -> list[str]:
    if isinstance(value, str):
        return [g for g in value.split("|") if g]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(g) for g in value]  # type: ignore[attr-defined]


def item_tokens(title: str, genres: object, tags: str) -> list[str]:
    """The namespaced tokens of one item."""
    tokens = [f"genre:{g.strip().lower()}" for g in _genres(genres) if g != _NO_GENRE]
    tokens += [f"tag:{t}" for t in _WORD.findall((tags or "").lower())]
    title = _YEAR_SUFFIX.sub("", title or "").lower()
    tokens += [f"word:{w}" for w in _WORD.findall(title) if w not in _STOPWORDS and len(w) > 1]
    return tokens


def _column(meta: pd.DataFrame, name: str) -> list[object]:
    return list(meta[name]) if name in meta.columns else [""] * len(meta)


def content_embeddings(dataset: Dataset, dim: int = DEFAULT_DIM, seed: int = 0) -> np.ndarray:
    """float32 [n_items + 1, Dc], Dc <= dim; unit rows (zero where an item has no tokens)."""
    meta = dataset.item_meta
    docs = [
        item_tokens(str(t or ""), g, str(tag or ""))
        for t, g, tag in zip(
            _column(meta, "title"), _column(meta, "genres"), _column(meta, "tags"), strict=True
        )
    ][1:]  # row 0 is padding
    out_rows = dataset.n_items + 1
    if not any(docs):
        return np.zeros((out_rows, 1), dtype=np.float32)
    tfidf = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True, norm="l2")
    matrix = tfidf.fit_transform(docs)
    n_features = matrix.shape[1]
    if n_features <= dim or n_features <= 2 or len(docs) <= 2:
        reduced = matrix.toarray()  # already small: SVD would only rotate it
    else:
        components = min(dim, n_features - 1, len(docs) - 1)
        svd = TruncatedSVD(components, algorithm="randomized", random_state=seed)
        reduced = svd.fit_transform(matrix)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    reduced = np.divide(reduced, norms, out=np.zeros_like(reduced), where=norms > 0)
    out = np.zeros((out_rows, reduced.shape[1]), dtype=np.float32)
    out[1:] = reduced
    return out
