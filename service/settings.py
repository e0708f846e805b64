"""Every knob of the service in one typed object: env prefix CINESYNC_, nested delimiter `__`
(e.g. CINESYNC_REDIS__URL, CINESYNC_CACHE__L1_SIZE). Validated at start-up; unsafe values are
refused with an error naming the key and the value (`load_settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from model_store.errors import InvalidName
from model_store.validation import validate_model_name
from service.errors import SettingsError
from service.ratelimit import parse_networks

MIN_ADMIN_TOKEN_CHARS = 16
ENV_PREFIX = "CINESYNC_"
_SECRET_KEYS = frozenset({"admin_token"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    """L2 cache and live histories. `url` unset = no Redis (L1 and in-process history only)."""

    url: str | None = None
    socket_timeout_s: float = Field(default=0.05, gt=0, le=10)
    connect_timeout_s: float = Field(default=0.1, gt=0, le=10)
    max_connections: int = Field(default=64, ge=1, le=10_000)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: float = Field(default=2.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class CacheSettings(_Section):
    """L1 is in-process (size 0 disables it); L2 is Redis."""

    l1_size: int = Field(default=50_000, ge=0, le=10_000_000)
    l1_ttl_s: float = Field(default=30.0, gt=0, le=86_400)
    l2_enabled: bool = True
    l2_ttl_s: int = Field(default=300, ge=1, le=7 * 86_400)


class IndexSettings(_Section):
    """FAISS index choice: `auto` = exact Flat up to `flat_max_items` items, HNSW above."""

    kind: Literal["auto", "flat", "hnsw", "ivf", "gpu"] = "auto"
    # exact search is as fast as HNSW up to about this size: batch-1 top-110 over 64-d vectors,
    # one thread, 2-core AMD EPYC: 0.16 vs 0.15 ms at 20,000 items, 1.4 vs 0.3 ms at 50,000
    flat_max_items: int = Field(default=20_000, ge=1)
    # an approximate index answers a narrow filter (a genre: one removing over a tenth of the
    # items) that leaves at most this many items with an exact scan of them: HNSW's and IVF's
    # filtered searches lose most of such a filter's best items (recall@10 0.2-0.5 for one
    # genre at 100,000-200,000 items), and a scan of 100,000 items costs 1-2 ms here
    # (benchmarks/results/index.md). 0 = every filter runs inside the index.
    filter_scan_max_items: int = Field(default=100_000, ge=0)
    hnsw_m: int = Field(default=32, ge=4, le=256)
    ef_construction: int = Field(default=200, ge=8, le=4096)
    ef_search: int = Field(default=128, ge=8, le=4096)
    nlist: int = Field(default=1024, ge=1, le=1_000_000)
    nprobe: int = Field(default=32, ge=1, le=1_000_000)
    recall_sample: int = Field(default=256, ge=1, le=100_000)


class EncoderSettings(_Section):
    """ONNX Runtime: precision, threads, and what to do when CUDA is asked for but missing."""

    precision: Literal["fp32", "int8"] = "fp32"
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    use_gpu: bool = False
    require_gpu: bool = False  # use_gpu and CUDA missing: True = refuse to load, False = CPU
    warmup_queries: int = Field(default=32, ge=0, le=10_000)


class EventSettings(_Section):
    """Online events: per-client token bucket, per-user live history cap, clock skew."""

    rate_per_s: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    history_cap: int = Field(default=200, ge=1, le=100_000)
    max_future_skew_s: float = Field(default=300.0, ge=0)
    max_clients: int = Field(default=100_000, ge=1)  # rate-limiter buckets kept (LRU)
    max_users: int = Field(
        default=100_000, ge=1
    )  # users whose live history is kept in process (LRU)
    # how often events accepted while Redis could not take them are pushed once it answers
    sync_interval_s: float = Field(default=1.0, gt=0, le=3600)
    # at shutdown, how long to keep trying to push such events before they are lost
    shutdown_flush_s: float = Field(default=5.0, ge=0, le=600)


class Settings(BaseSettings):
    """The service settings (see module docstring for the environment variable names)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    env: Literal["development", "production"] = "development"
    store_dir: Path = Path("model_store/store")
    model_name: str = "cinesync"
    admin_token: SecretStr | None = None
    redis: RedisSettings = RedisSettings()
    cache: CacheSettings = CacheSettings()
    index: IndexSettings = IndexSettings()
    encoder: EncoderSettings = EncoderSettings()
    events: EventSettings = EventSettings()
    faiss_threads: int = Field(default=1, ge=1, le=256)
    max_k: int = Field(default=100, ge=1, le=10_000)
    # A miss is scored on the event loop itself when the catalogue has at most this many items
    # (a batch-1 encoder call and index search take a few tenths of a millisecond there, about
    # what a worker-thread hop costs); larger catalogues are scored in a worker thread, so a
    # long exact search never stalls the loop (and every L1 hit behind it). 0 = always a
    # worker thread.
    inline_compute_max_items: int = Field(default=20_000, ge=0, le=100_000_000)
    n_full: int = Field(
        default=10, ge=1, le=10_000
    )  # history length where the sequential model takes over
    n_content: int = Field(
        default=0, ge=0, le=10_000
    )  # histories this short get content-only answers
    # Users with no history who send `features` get the bundle's feature-only query (when it
    # has one); false = they get popular items, as without features (benchmarks/cold_start.py
    # tells whether a model's features beat popularity).
    feature_queries: bool = True
    exposure_window: int = Field(
        default=1000, ge=1, le=1_000_000
    )  # served lists behind online gauges
    max_concurrency: int = Field(default=256, ge=1, le=100_000)
    max_body_bytes: int = Field(default=16_384, ge=256, le=64 * 1024 * 1024)
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1024 * 1024)
    max_user_id_chars: int = Field(default=128, ge=1, le=4096)
    cors_origins: Annotated[list[str], NoDecode] = []  # comma-separated in the environment
    trusted_proxies: Annotated[list[str], NoDecode] = []  # peers whose X-Forwarded-For counts
    shutdown_delay_s: float = Field(
        default=0.0, ge=0, le=600
    )  # readiness is false this long before exit
    graceful_timeout_s: float = Field(default=20.0, ge=1, le=600)  # in-flight requests finish
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = False
    fast_path: bool = True  # serve canonical GET /recommend without the framework (fastpath.py)

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        try:
            return validate_model_name(value)
        except InvalidName as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # IP addresses or CIDR networks only (no '*')
        return value

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        token = self.admin_token.get_secret_value() if self.admin_token is not None else ""
        if self.env == "production" and len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"CINESYNC_ADMIN_TOKEN: production needs an admin token of at least "
                f"{MIN_ADMIN_TOKEN_CHARS} characters (got {len(token)})"
            )
        if self.env == "production" and "*" in self.cors_origins:
            raise ValueError("CINESYNC_CORS_ORIGINS='*' is refused in production")
        return self

    def admin_token_value(self) -> str | None:
        """The configured admin token, or None when admin endpoints are disabled."""
        if self.admin_token is None or not self.admin_token.get_secret_value():
            return None
        return self.admin_token.get_secret_value()


def env_name(loc: tuple[int | str, ...]) -> str:
    """("redis", "url") -> CINESYNC_REDIS__URL."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def describe(exc: ValidationError) -> str:
    """One line per problem: the variable, the value (secrets masked) and what is wrong."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if not loc:  # model-level check: the message names its key
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        value: Any = err.get("input")
        shown = "***" if loc[0] in _SECRET_KEYS else repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{env_name(loc)}={shown}: {message}")
    return "invalid settings: " + "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and `overrides`); SettingsError names each bad key."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from exc
    except PydanticSettingsError as exc:  # e.g. a nested section that is not valid JSON
        raise SettingsError(f"invalid settings: {exc}") from exc
