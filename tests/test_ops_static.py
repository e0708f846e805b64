"""Static checks of the operations files: compose (docker-compose v1 from Debian resolves them),
Prometheus config and alert rules (promtool), the Grafana dashboard's queries against the
metrics the service really exports, the Dockerfile's COPY sources, and .env.example."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from service.metrics import LATENCY_BUCKETS, ServiceMetrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/cinesync.json"
METRIC_RE = re.compile(r"\bcinesync_[a-z0-9_]+\b")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install {package})")
    return path


# ------------------------------------------------------------------ docker compose
class ComposeLoader(yaml.SafeLoader):
    """YAML loader that keeps Compose v2's `!reset` / `!override` merge tags as markers."""


class Reset:
    pass


class Override:
    def __init__(self, value: Any) -> None:
        self.value = value


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())
ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: Override(loader.construct_object(node, deep=True)),  # type: ignore[arg-type]
)
REPLACED_SEQUENCES = {"command", "entrypoint", "test"}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """The compose-spec merge rules for what our files use: mappings merge, `!reset` removes,
    `!override` replaces, command/entrypoint/healthcheck.test replace, other sequences append."""
    if isinstance(override, Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            if isinstance(v, Reset):
                out.pop(k, None)
            else:
                out[k] = merge(base[k], v, k) if k in base else strip_tags(v)
        return out
    if isinstance(base, list) and isinstance(override, list) and key not in REPLACED_SEQUENCES:
        return base + [v for v in override if v not in base]
    return strip_tags(override)


def strip_tags(value: Any) -> Any:
    if isinstance(value, Override):
        return value.value
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items() if not isinstance(v, Reset)}
    return value


def compose_config(tmp_path: Path, documents: dict[str, Any]) -> dict[str, Any]:
    """`docker-compose config` of the given file contents in a project folder that looks like
    the repository (deploy/ and loadtests/ linked, .env copied from .env.example)."""
    for name in ("deploy", "loadtests", "Dockerfile"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    args = [tool("docker-compose", "docker-compose")]
    for i, (name, doc) in enumerate(documents.items()):
        path = tmp_path / f"{i}-{name}"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        args += ["-f", str(path)]
    result = subprocess.run(
        [*args, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def load_compose(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)
    return doc


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = (
        service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    return devices


def test_compose_resolves_with_gpu_reservation_healthchecks_and_read_only_store(
    tmp_path: Path,
) -> None:
    services = compose_config(tmp_path, {"compose.yml": load_compose("docker-compose.yml")})[
        "services"
    ]
    assert {"redis", "api", "trainer", "prometheus", "grafana", "locust"} <= set(services)
    api, redis = services["api"], services["redis"]
    assert gpu_devices(api) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert api["build"]["target"] == "serve-gpu"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert "model-store:/store:ro" in api["volumes"]
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    command = redis["command"]
    # cached lists are evicted before live histories (test_api_redis checks every key's TTL)
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-ttl"
    assert "--maxmemory" in command
    assert command[command.index("--appendonly") + 1] == "no"
    assert command[command.index("--save") + 1] == ""
    assert services["trainer"]["profiles"] == ["train"]
    assert "model-store:/store:rw" in services["trainer"]["volumes"]
    assert "datasets:/data:rw" in services["trainer"]["volumes"]  # the image's CINESYNC_DATA_DIR
    assert services["locust"]["profiles"] == ["load"]
    for name in ("redis", "api", "prometheus", "grafana"):
        assert "profiles" not in services[name], name


def clear_cinesync_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CINESYNC_"):
            monkeypatch.delenv(key)


def grace_seconds(value: str) -> float:
    """A compose duration such as "40s" or "1m30s", in seconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert value, "empty duration"
    assert match, f"unexpected duration {value!r}"
    return 60.0 * int(match[1] or 0) + int(match[2] or 0)


def test_prometheus_and_grafana_are_published_on_loopback_only_unless_asked(
    tmp_path: Path,
) -> None:
    services = compose_config(tmp_path, {"compose.yml": load_compose("docker-compose.yml")})[
        "services"
    ]
    for name, port in (("prometheus", "9090"), ("grafana", "3000")):
        assert services[name]["ports"] == [f"127.0.0.1:{port}:{port}/tcp"], name
    (api_port,) = services["api"]["ports"]  # the api itself faces the network
    assert not api_port.get("host_ip"), api_port
    assert api_port["target"] == 8000


def test_the_load_test_output_folder_exists_in_a_clone() -> None:
    # Docker would create a missing bind-mount source as root, and the locust container (the
    # host user) could not write its CSVs there
    assert (ROOT / "loadtests/out/.gitkeep").is_file()
    mounts = load_compose("docker-compose.yml")["services"]["locust"]["volumes"]
    assert "./loadtests/out:/out" in mounts


def test_docker_waits_for_the_whole_graceful_shutdown_before_it_kills_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_cinesync_env(monkeypatch)
    settings = Settings()  # the defaults the api container runs with
    needed = settings.shutdown_delay_s + settings.graceful_timeout_s
    needed += settings.events.shutdown_flush_s  # events Redis has not taken are pushed last
    api = load_compose("docker-compose.yml")["services"]["api"]
    assert grace_seconds(api["stop_grace_period"]) >= needed + 5  # + closing Redis and the rest


def test_cpu_override_builds_the_cpu_target_without_a_gpu_reservation(tmp_path: Path) -> None:
    base, cpu = load_compose("docker-compose.yml"), load_compose("docker-compose.cpu.yml")
    services = compose_config(tmp_path, {"merged.yml": merge(base, cpu)})["services"]
    api = services["api"]
    assert api["build"]["target"] == "serve"
    assert gpu_devices(api) == []
    assert "model-store:/store:ro" in api["volumes"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gpu_devices(load_compose("docker-compose.yml")["services"]["api"])  # base untouched


def test_compose_mounts_the_files_prometheus_and_grafana_are_configured_with() -> None:
    services = load_compose("docker-compose.yml")["services"]
    prometheus_mounts = dict(
        v.rsplit(":", 1)[0].split(":")
        for v in services["prometheus"]["volumes"]
        if v.startswith("./")
    )
    assert prometheus_mounts["./deploy/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prometheus_mounts["./deploy/alerts.yml"] == "/etc/prometheus/alerts.yml"
    prom = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"]  # resolved next to the mounted config
    (api_job,) = [job for job in prom["scrape_configs"] if job["job_name"] == "cinesync-api"]
    # one target per replica, found by the service's DNS name (not one static address)
    assert "static_configs" not in api_job
    assert api_job["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    grafana_mounts = dict(
        v.rsplit(":", 1)[0].split(":") for v in services["grafana"]["volumes"] if v.startswith("./")
    )
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/cinesync.yml").read_text()
    )["providers"][0]
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


# ------------------------------------------------------------------ prometheus
def test_prometheus_config_rules_and_rule_unit_tests_pass_promtool() -> None:
    promtool = tool("promtool", "prometheus")
    for args in (
        ["check", "config", "deploy/prometheus.yml"],
        ["check", "rules", "deploy/alerts.yml"],
        ["test", "rules", "deploy/alerts_test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_latency_errors_breaker_and_missing_bundle() -> None:
    rules = {
        r["alert"]: r
        for g in yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    latency = rules["CineSyncHighP99Latency"]
    assert "histogram_quantile(0.99" in latency["expr"]
    assert "> 0.05" in latency["expr"]
    assert "cinesync_request_duration_seconds_bucket" in latency["expr"]
    assert latency["for"] == "5m"
    errors = rules["CineSyncHighErrorRatio"]
    assert 'result=~"server_error|rejected"' in errors["expr"]  # shed load pages too
    assert "> 0.01" in errors["expr"]
    assert errors["for"] == "5m"
    assert rules["CineSyncRedisBreakerOpen"]["expr"].strip() == "cinesync_redis_breaker_open == 1"
    assert rules["CineSyncRedisBreakerOpen"]["for"] == "1m"
    pending = rules["CineSyncEventsNotInRedis"]
    assert pending["expr"].strip() == "cinesync_history_pending_users > 0"
    assert pending["for"] == "5m"
    assert rules["CineSyncNoBundleLoaded"]["expr"].strip() == "cinesync_bundle_ready == 0"
    assert rules["CineSyncNoBundleLoaded"]["for"] == "1m"
    assert all(
        r["annotations"]["summary"] and r["annotations"]["description"] for r in rules.values()
    )


# ------------------------------------------------------------------ grafana + metric names
def exported_metric_names() -> set[str]:
    """Every series name the service's registry can expose."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_count", "_sum"],
        "info": ["_info"],
        "gauge": [""],
        "summary": ["", "_count", "_sum"],
    }
    names = set()
    for family in ServiceMetrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def test_dashboard_and_alerts_query_only_metrics_the_service_exports() -> None:
    exported = exported_metric_names()
    groups = yaml.safe_load((ROOT / "deploy/alerts.yml").read_text())["groups"]
    alerts = [rule["expr"] for group in groups for rule in group["rules"]]
    used = {m for expr in [*dashboard_exprs(), *alerts] for m in METRIC_RE.findall(expr)}
    assert used, "no cinesync metric found in the dashboard"
    assert used <= exported, f"unknown metrics: {sorted(used - exported)}"


def test_dashboard_shows_every_required_view() -> None:
    exprs = dashboard_exprs()
    joined = "\n".join(exprs)
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({quantile}, sum by (endpoint, le)" in e for e in exprs)
    for needle in (
        "rate(cinesync_requests_total",
        'cinesync_cache_requests_total{result="hit"}',
        "sum by (strategy)",
        "cinesync_reloads_total",
        "cinesync_model_info",
        "cinesync_online_coverage",
        "cinesync_history_pending_users",
        "cinesync_cache_stale_writes_total",
    ):
        assert needle in joined, needle


def test_dashboard_is_well_formed_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = dashboard_panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_latency_buckets_resolve_a_few_milliseconds() -> None:
    assert LATENCY_BUCKETS[0] <= 0.001
    assert 0.05 in LATENCY_BUCKETS


# ------------------------------------------------------------------ Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = Path(path.rstrip("/")).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
        for pattern in patterns
        for prefix in prefixes
    )


def test_every_dockerfile_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = [rest for op, rest in dockerfile_instructions() if op == "COPY"]
    assert copies
    for rest in copies:
        words = rest.split()
        if any(w.startswith("--from=") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert not dockerignored(source), f"COPY source {source} is in .dockerignore"


def stages() -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, rest in dockerfile_instructions():
        if op == "FROM":
            current = []
            out[rest.split()[-1]] = current
        current.append((op, rest))
    return out


def test_dockerfile_targets_install_dependencies_before_code_and_run_as_non_root() -> None:
    all_stages = stages()
    assert {"serve", "serve-gpu", "train", "loadtest"} <= set(all_stages)
    for target in ("serve", "serve-gpu"):
        chain = all_stages[target]
        parent = chain[0][1].split()[0]
        ops = all_stages.get(parent, []) + chain
        joined = [f"{op} {rest}" for op, rest in ops]
        deps = next(i for i, line in enumerate(joined) if "pip install -r" in line)
        code = next(i for i, line in enumerate(joined) if "--from=wheel" in line)
        assert deps < code, target
        assert any(op == "USER" and rest != "root" for op, rest in chain[-6:]), target
        health = next(rest for op, rest in chain if op == "HEALTHCHECK")
        assert "/readyz" in health
        assert "urllib" in health
    assert "requirements.py serve gpu" in " ".join(r for _, r in all_stages["serve-gpu"])
    assert "torch==2.13.0" in " ".join(r for _, r in all_stages["train-deps"])


def test_serve_requirements_carry_no_torch_and_gpu_replaces_cpu_builds() -> None:
    def reqs(*extras: str) -> str:
        return subprocess.run(
            [sys.executable, "deploy/docker/requirements.py", *extras],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    serve = reqs("serve")
    assert "torch" not in serve
    assert "onnxruntime" in serve
    assert "faiss-cpu" in serve
    gpu = reqs("serve", "gpu").split()
    assert "onnxruntime-gpu>=1.17" in gpu
    assert not any(r.startswith("onnxruntime>") for r in gpu)
    assert not any(r.startswith("faiss-cpu") for r in gpu)
    assert any(r.startswith("torch==2.13.0") for r in reqs("train").split())


# ------------------------------------------------------------------ .env.example
def settings_env_names(model: type[BaseModel], prefix: str = "CINESYNC_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += settings_env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(prefix + name.upper())
    return names


def env_example_entries() -> dict[str, str]:
    entries = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#? ?(CINESYNC_[A-Z0-9_]+)=(.*)", line.strip())
        if match:
            assert match.group(1) not in entries, f"{match.group(1)} listed twice"
            entries[match.group(1)] = match.group(2)
    return entries


def test_env_example_lists_every_setting_with_a_comment() -> None:
    entries = env_example_entries()
    missing = [n for n in settings_env_names(Settings) if n not in entries]
    assert not missing, f"settings missing from .env.example: {missing}"
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"#? ?CINESYNC_[A-Z0-9_]+=.*", line.strip()):
            above = lines[i - 1].strip()
            assert above.startswith("#"), f"no comment above {line}"
            assert "=" not in above.split()[1], f"no comment above {line}"


def test_env_example_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cinesync_env(monkeypatch)
    defaults = Settings()
    for name, value in env_example_entries().items():
        if value and name in settings_env_names(Settings):
            monkeypatch.setenv(name, value)
    assert Settings() == defaults
