"""Text reports behind `cinesync store list|rollback|prune` (the CLI prints what these return)."""

from __future__ import annotations

import os
from pathlib import Path

from model_store.errors import InvalidName, StoreError
from model_store.store import ModelStore
from model_store.validation import validate_model_name

MODEL_NAME_ENV = "CINESYNC_MODEL_NAME"
DEFAULT_MODEL_NAME = "cinesync"
HEADER = ("MODEL", "VERSION", "LATEST", "CREATED_AT (UTC)", "KIND", "VALID NDCG@10", "TEST NDCG@10")


def default_model_name() -> str:
    """$CINESYNC_MODEL_NAME (unset or empty: "cinesync"), validated as it is, like the service's
    settings do: a value the service would refuse (e.g. "cinesync ") raises InvalidName here too.
    The one default of every command (publish, train --publish, store rollback|prune)."""
    value = os.environ.get(MODEL_NAME_ENV) or DEFAULT_MODEL_NAME
    try:
        return validate_model_name(value)
    except InvalidName as exc:
        raise InvalidName(f"${MODEL_NAME_ENV}: {exc}") from None


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _rows(store: ModelStore, name: str) -> tuple[list[tuple[str, ...]], list[str]]:
    latest = store.latest(name)
    versions = store.versions(name)
    rows: list[tuple[str, ...]] = []
    for version in versions:
        try:
            m = store.manifest(name, version)
        except StoreError as exc:  # changed since it was listed
            rows.append((name, str(version), "", f"unreadable: {exc}", "", "", ""))
            continue
        rows.append(
            (
                name,
                str(version),
                "*" if version == latest else "",
                m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                m.model.kind,
                _metric(m.ndcg10("valid")),
                _metric(m.ndcg10("test")),
            )
        )
    notes = []
    if not versions:
        notes.append(f"{name}: no complete versions")
    if latest is None and versions:
        notes.append(f"{name}: LATEST is not set")
    elif latest is not None and latest not in versions:
        notes.append(f"{name}: LATEST points at {latest}, which is not a complete version")
    return rows, notes


def list_store(root: Path, name: str | None = None) -> str:
    """A table of versions (every model when `name` is None) with LATEST marked by '*'.
    A store folder that does not exist (or is not a folder) raises StoreError."""
    if not Path(root).is_dir():
        problem = "is not a folder" if os.path.lexists(root) else "does not exist"
        raise StoreError(f"no model store at {root}: the path {problem}")
    store = ModelStore(Path(root))
    names = [name] if name is not None else store.models()
    if not names:
        return f"no models in {root}"
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for model in names:
        model_rows, model_notes = _rows(store, model)
        rows += model_rows
        notes += model_notes
    lines = []
    if rows:
        widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
        for row in [HEADER, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines + notes)


def rollback(root: Path, name: str | None = None, to: int | None = None) -> str:
    """Point LATEST at `to` (default: the newest complete version before it); report the move."""
    store = ModelStore(Path(root))
    model = name or default_model_name()
    previous = store.latest(model)
    current = store.rollback(model, to)
    return f"{model}: LATEST {previous if previous is not None else '(unset)'} -> {current}"


def prune(root: Path, name: str | None = None, keep: int = 5) -> str:
    """Delete all but the newest `keep` versions (LATEST always kept); report what went."""
    store = ModelStore(Path(root))
    model = name or default_model_name()
    deleted = store.prune(model, keep)
    kept = ", ".join(map(str, store.versions(model))) or "none"
    gone = ", ".join(map(str, deleted)) if deleted else "nothing"
    return f"{model}: deleted {gone}; kept {kept} (LATEST {store.latest(model)})"
