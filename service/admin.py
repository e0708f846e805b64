"""What /admin/models shows: the store's versions with their offline metrics, and the served
bundle (providers, index kind and measured recall@10). Reads the store: run it in a thread."""

from __future__ import annotations

from model_store.errors import StoreError
from model_store.store import ModelStore
from service.bundle import Bundle
from service.registry import ModelRegistry
from service.schemas import IndexInfo, ModelsResponse, ServedInfo, UserFeatureInfo, VersionInfo
from service.settings import Settings


def served_info(bundle: Bundle, settings: Settings) -> ServedInfo:
    return ServedInfo(
        name=bundle.name,
        version=bundle.version,
        loaded_at=bundle.loaded_at,
        load_seconds=round(bundle.load_seconds, 4),
        precision=settings.encoder.precision,
        providers=bundle.providers,
        provider_fallback=bundle.encoder.fallback_reason,
        index=IndexInfo(
            kind=bundle.index.kind,
            exact=bundle.index.exact,
            recall_at_10=bundle.index_recall,
            fallback_reason=bundle.index.fallback_reason,
        ),
        items=bundle.n_items,
        users=len(bundle.users),
        user_features=[
            UserFeatureInfo(name=c.name, kind=c.kind, edges=list(c.edges), values=list(c.values))
            for c in (bundle.features.columns if bundle.features is not None else ())
        ],
    )


def _version(
    store: ModelStore, name: str, version: int, latest: int | None, served: int | None
) -> VersionInfo:
    is_latest, is_served = version == latest, version == served
    try:
        manifest = store.manifest(name, version)
    except StoreError as exc:
        return VersionInfo(
            version=version,
            latest=is_latest,
            served=is_served,
            created_at=None,
            model_kind=None,
            dataset=None,
            metrics={},
            error=str(exc),
        )
    return VersionInfo(
        version=version,
        latest=is_latest,
        served=is_served,
        created_at=manifest.created_at,
        model_kind=manifest.model.kind,
        dataset=manifest.dataset.name,
        metrics={"valid": dict(manifest.metrics.valid), "test": dict(manifest.metrics.test)},
    )


def list_models(store: ModelStore, registry: ModelRegistry, settings: Settings) -> ModelsResponse:
    """Blocking: reads manifests from the store."""
    bundle = registry.current  # read once
    name = settings.model_name
    served = bundle.version if bundle is not None else None
    try:
        versions = store.versions(name)
        latest = store.latest(name)
    except StoreError:
        versions, latest = [], None
    return ModelsResponse(
        name=name,
        latest=latest,
        served=served_info(bundle, settings) if bundle is not None else None,
        reloading=registry.reloading,
        last_error=registry.last_error,
        versions=[_version(store, name, v, latest, served) for v in versions],
    )
