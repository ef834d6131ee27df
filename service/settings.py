"""Service settings, read from NABLA_* environment variables (and overridable in code)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.limits import Limits


class Settings(BaseSettings):
    """Every setting is an environment variable with the NABLA_ prefix, e.g. NABLA_PORT=8000."""

    model_config = SettingsConfigDict(env_prefix="NABLA_", extra="ignore")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, description="port to listen on")
    workers: int = Field(1, ge=1, description="worker processes (uvicorn)")
    data_dir: Path = Field(Path("./data"), description="folder of the SQLite registry")
    database_url: str | None = Field(
        None, description="postgresql://user@host:port/db to share the registry between replicas; "
                          "default: SQLite under data_dir")
    api_keys: str = Field("", description="comma-separated keys; when set, /v1 requires a Bearer key")
    admin_keys: str = Field("", description="comma-separated keys allowed to register and delete models")
    model_repository: Path | None = Field(None, description="folder of *.json model files loaded at start")
    log_level: str = Field("info", description="debug, info, warning or error")

    # 12 MiB carries a million float64 values as base64; as JSON numbers it parses in ~80 ms (in a
    # compute worker, so only that request waits).
    max_body_bytes: int = Field(12 * 1024 * 1024, description="largest request body")
    max_array_elements: int = Field(10_000_000, description="largest array, inputs and intermediates")
    max_total_elements: int = Field(20_000_000, description="total elements of a request's arrays")
    max_graph_nodes: int = Field(10_000, description="nodes of a sent graph or expression")
    max_expression_chars: int = Field(20_000, description="length of an expression's source")
    max_order: int = Field(4, ge=1, description="highest derivative order (grad order, check order)")
    max_depth: int = Field(32, description="nesting depth of argument pytrees and JSON values")
    max_expression_depth: int = Field(200, ge=8, le=400,
                                      description="nesting depth of an expression's syntax tree")
    max_constant_elements: int = Field(10_000_000, description="elements of a model's or graph's constants")
    max_dimensions: int = Field(32, ge=1, le=32, description="dimensions of any array")
    max_integer_power: int = Field(1000, ge=1, description="largest integer exponent in a function (x ** n)")
    max_repeats: int = Field(100_000, ge=1, description="largest repeat or tile count in a function")
    max_plan_nodes: int = Field(50_000, ge=1, description="operations of a compiled derivative (a high-order "
                                                          "derivative of a long function grows fast)")
    max_leaves: int = Field(10_000, ge=1, description="array leaves in a request's argument pytrees")
    max_response_bytes: int = Field(128 * 1024 * 1024, description="predicted size of an encoded response")
    max_request_bytes: int = Field(512 * 1024 * 1024,
                                   description="predicted memory of one request: inputs, peak of intermediates, "
                                               "result and encoded response")
    compute_timeout_s: float = Field(30.0, gt=0, description="one deadline per request: decoding, computing "
                                                             "and encoding")
    plan_cache_size: int = Field(256, ge=0, description="compiled gradient plans kept in memory")
    plan_cache_bytes: int = Field(256 * 1024 * 1024, ge=0, description="bytes the plan cache may hold")
    compute_threads: int = Field(2, ge=1, description="requests computed at once per server process, each in a "
                                                     "worker process of its own (NABLA_COMPUTE_ISOLATION)")
    compute_isolation: Literal["process", "thread"] = Field(
        "process", description="where requests are computed: `process` (worker processes: a long computation "
                               "never delays /livez, an overrun is killed, memory is given back by recycling) or "
                               "`thread` (threads of the server process: less memory, for embedding and debugging)")
    worker_max_rss_bytes: int | None = Field(
        None, ge=16 * 1024 * 1024, description="a compute worker whose resident memory passes this after a request "
                                               "is replaced by a fresh one; default: its size at start + "
                                               "NABLA_PLAN_CACHE_BYTES + 64 MiB")
    inline_max_body_bytes: int = Field(
        4096, ge=0, description="a compute request this small whose plan is cached and cheap is computed on the "
                                "event loop, without the hop to a compute worker (0: never)")
    inline_max_ms: float = Field(0.5, ge=0, description="the most a cached plan's runs may take for its requests to "
                                                       "be computed inline (NABLA_INLINE_MAX_BODY_BYTES)")
    admission_queue: int = Field(32, ge=0, description="requests that may wait for a compute slot; "
                                                      "beyond that 503 with Retry-After")
    header_timeout_s: float = Field(10.0, gt=0, description="time a client has to send a request's headers")
    body_timeout_s: float = Field(30.0, gt=0, description="time a client has to send a request's body")
    registry_refresh_s: float = Field(1.0, ge=0, description="how stale a replica's view of the registry "
                                                            "may be (deletes and new versions elsewhere)")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")
        return v.lower()

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def admin_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.admin_keys.split(",") if k.strip())

    def engine_limits(self) -> Limits:
        return Limits(
            max_source_chars=self.max_expression_chars, max_nodes=self.max_graph_nodes,
            max_depth=self.max_expression_depth, max_constant_elements=self.max_constant_elements,
            max_array_elements=self.max_array_elements, max_dimensions=self.max_dimensions,
            max_integer_power=self.max_integer_power, max_repeats=self.max_repeats,
        )
