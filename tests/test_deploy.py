"""The deploy/ stack: compose file, Prometheus config, alert rules and Grafana dashboard.

There is no Docker engine to run the stack in tests, so these tests prove it by
cross-checking the files: each against the others (service names, ports, mounts, the data
source uid) and every query against the metrics mmbot really exports, taken from a real
exposition rendered by :class:`mmbot.observability.Metrics`. When the ``promql-parser``
package (a binding of a Rust PromQL parser) is installed, every expression is also parsed
and its labels checked through the syntax tree; without it those tests skip, and the
regex-based checks still run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mmbot.config import ShutdownSettings, load_settings
from mmbot.journal import Kind
from mmbot.observability import FAMILIES, Health, Metrics, State
from tests.support.env import clear_mmbot_env
from tests.support.metric_contract import CONTRACT

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "mmbot.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "mmbot.json"


#: Alert name -> severity. The README documents them under these names.
ALERT_SEVERITY = {
    "MmbotDown": "page",
    "MmbotNotReady": "page",
    "MmbotQuotingStalled": "page",
    "MmbotReconnectStorm": "warn",
    "MmbotExposureNearLimit": "warn",
    "MmbotExposureOverLimit": "page",
    "MmbotDailyLossNearLimit": "warn",
    "MmbotDailyLossLimitReached": "page",
    "MmbotDeclineRateSpike": "warn",
    "MmbotRateLimited": "warn",
    "MmbotJournalUnhealthy": "page",
    "MmbotConfirmsFailing": "warn",
    "MmbotRfqToQuoteSlow": "warn",
    "MmbotRestarting": "warn",
    "MmbotKillSwitchOn": "info",
    "MmbotRecordingDropping": "warn",
}

#: The metrics each alert must be built on, so a rule cannot silently watch something else.
ALERT_METRICS = {
    "MmbotDown": {"up"},
    "MmbotNotReady": {"mmbot_ready"},
    "MmbotQuotingStalled": {
        "mmbot_rfqs_received_total",
        "mmbot_quotes_created_total",
        "mmbot_quotes_replaced_total",
        "mmbot_ready",
        "mmbot_kill_switch",
    },
    "MmbotReconnectStorm": {"mmbot_ws_reconnects_total"},
    "MmbotExposureNearLimit": {"mmbot_exposure_dollars", "mmbot_exposure_limit_dollars"},
    "MmbotExposureOverLimit": {"mmbot_exposure_dollars", "mmbot_exposure_limit_dollars"},
    "MmbotDailyLossNearLimit": {"mmbot_daily_pnl_dollars", "mmbot_daily_loss_limit_dollars"},
    "MmbotDailyLossLimitReached": {"mmbot_daily_pnl_dollars", "mmbot_daily_loss_limit_dollars"},
    "MmbotDeclineRateSpike": {"mmbot_quotes_declined_total", "mmbot_quotes_accepted_total"},
    "MmbotRateLimited": {"mmbot_rate_limited_total"},
    "MmbotJournalUnhealthy": {"mmbot_journal_healthy", "mmbot_journal_rows_lost_total"},
    "MmbotConfirmsFailing": {"mmbot_confirms_failed_total"},
    "MmbotRfqToQuoteSlow": {
        "mmbot_rfq_to_quote_seconds_bucket",
        "mmbot_rfq_to_quote_seconds_count",
    },
    "MmbotRestarting": {"process_start_time_seconds"},
    "MmbotKillSwitchOn": {"mmbot_kill_switch"},
    "MmbotRecordingDropping": {"mmbot_recording_rows_dropped_total"},
}

#: Every rule's runbook_url: the operator's base address (the external label runbook_base,
#: set in prometheus.yml from MMBOT_RUNBOOK_BASE), "#", the alert's README heading anchor.
RUNBOOK_BASE_TEMPLATE = "{{ $externalLabels.runbook_base }}"
RUNBOOK_BASE_VARIABLE = "MMBOT_RUNBOOK_BASE"

#: Labels Prometheus attaches to every scraped series (the scrape target's): ``shard`` is a
#: target label of prometheus.yml's mmbot job.
TARGET_LABELS = frozenset({"job", "instance", "shard"})
#: The dashboard's template variables: every selector of every panel filters on both.
DASHBOARD_VARIABLES = ("instance", "shard")
DASHBOARD_FILTERS = tuple(f'{name}=~"${name}"' for name in DASHBOARD_VARIABLES)
#: A series selector with its matchers, if any.
ANY_SELECTOR = re.compile(r"\b(mmbot_[a-z0-9_]+|up)\b(?:\{([^}]*)\})?")
#: Series Prometheus makes itself, which the queries may use besides mmbot's: name -> type.
BUILTIN_SERIES = {"up": "gauge"}

METRIC_NAME = re.compile(r"\bmmbot_[a-z0-9_]+")
# A selector with matchers: name{label="value", ...}.
SELECTOR = re.compile(r"\b(mmbot_[a-z0-9_]+|up)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# Grafana's built-in interval variables, replaced by a duration before parsing.
GRAFANA_VARIABLE = re.compile(
    r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}"
)
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# ------------------------------------------------------------------------------ loading


def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    data = _yaml(PROMETHEUS)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = _yaml(ALERTS)
    return [rule for group in data["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (source,) = _yaml(DATASOURCE)["datasources"]
    return source


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Series:
    """A sample name in mmbot's exposition: its family's type and its label names."""

    kind: str
    labels: frozenset[str]


class _Holding:
    """A daemon holding one position, so the per-market position series has a sample."""

    def state(self) -> State:
        return State(positions={"KXEXAMPLE-26": Decimal(5)})

    def health(self) -> Health:
        return Health(ready=True, websocket_subscribed=True)


@pytest.fixture(scope="module")
def exposition() -> dict[str, Series]:
    """Sample name -> Series, from a real scrape of a Metrics fed one of everything.

    Labelled counters have no sample until a label value is seen, so every journal kind and
    a REST success and a 429 are fed once; a family the feed misses is caught by
    test_exposition_covers_every_family rather than passing unnoticed.
    """
    metrics = Metrics()
    for kind in Kind:
        # Kinds counted without a reason ignore it; the others get one label value.
        metrics.on_journal_record(kind.value, "example")
    metrics.on_rest_response("create_quote", "201", 0.004)
    metrics.on_rest_response("create_quote", "429", 0.002)
    metrics.rfq_to_quote(0.003)
    metrics.accept_to_confirm(0.2)
    metrics.bind(_Holding())
    body, _ = metrics.render()

    series: dict[str, Series] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            seen = series.get(sample.name)
            labels = frozenset(sample.labels) | (seen.labels if seen else frozenset())
            series[sample.name] = Series(family.type, labels)
    for name, kind in BUILTIN_SERIES.items():
        series[name] = Series(kind, frozenset())
    return series


def _family_samples(family: str) -> set[str]:
    """The sample names a family of FAMILIES is exposed (and queried) as."""
    if FAMILIES[family] == "histogram":
        return {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return {family}


# ------------------------------------------------------------------------------ queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"panel {panel['id']} {panel.get('title')!r} target {target.get('refId')}", target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def _alert_exprs(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", str(rule["expr"])) for rule in rules]


@pytest.fixture(scope="module")
def exprs(dashboard: dict[str, Any], rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = _dashboard_exprs(dashboard) + _alert_exprs(rules)
    assert len(found) > 20, "the dashboard and rules should hold many queries"
    return found


def _without_grafana_variables(expr: str) -> str:
    """The expression as Prometheus receives it (Grafana substitutes its variables)."""
    return GRAFANA_VARIABLE.sub("5m", expr)


def _known_labels(exposition: dict[str, Series], name: str) -> frozenset[str]:
    return exposition[name].labels | TARGET_LABELS


# ------------------------------------------------------------------------------ exposition


def test_exposition_covers_every_family(exposition: dict[str, Series]) -> None:
    # Otherwise a family missing from the fixture would make its queries look wrong, or
    # a family dropped from the code would leave its queries unchecked.
    for family in FAMILIES:
        assert _family_samples(family) <= exposition.keys(), family


def test_contract_families_are_exported() -> None:
    assert set(CONTRACT) <= FAMILIES.keys()


# ------------------------------------------------------------------------------ compose


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of a service's volumes, short or long syntax."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
            continue
        source, target, *mode = volume.split(":")
        mounts.append((source, target, mode == ["ro"]))
    return mounts


def _is_host_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _host_mount(service: dict[str, Any], target: str) -> tuple[Path, bool]:
    """The host path mounted at ``target`` (resolved from deploy/), and whether read-only."""
    for source, mounted, read_only in _mounts(service):
        if mounted == target:
            assert _is_host_path(source), f"{target} is a named volume, not a host path"
            return (DEPLOY / source).resolve(), read_only
    raise AssertionError(f"nothing is mounted at {target}")


def _container_port(service: dict[str, Any], host_port: int) -> int:
    for spec in service.get("ports", []):
        *_, published, container = str(spec).split(":")
        if int(published) == host_port:
            return int(container)
    raise AssertionError(f"host port {host_port} is not published")


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    assert DURATION.match(text), f"not a duration: {text!r}"
    return sum(
        float(value) * units[unit] for value, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    )


def test_compose_has_the_three_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"mmbot", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name


def test_mmbot_is_built_from_the_root_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["services"]["mmbot"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert dockerfile == ROOT / "Dockerfile"
    assert dockerfile.is_file(), "the image's Dockerfile must exist at the repository root"
    # The image must expose the port Prometheus scrapes.
    assert re.search(r"^\s*EXPOSE\s+.*\b9100\b", dockerfile.read_text(), re.MULTILINE)


def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        image = compose["services"][name]["image"]
        _, _, tag = image.rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin an exact version: {image}"


def test_every_host_path_in_a_mount_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source, target, _ in _mounts(service):
            if _is_host_path(source):
                assert (DEPLOY / source).exists(), f"{name}: {source} -> {target} does not exist"
                checked += 1
    assert checked >= 5


def test_named_volumes_are_declared_and_hold_the_state(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used: dict[str, str] = {}
    for service in compose["services"].values():
        for source, target, _ in _mounts(service):
            if not _is_host_path(source):
                assert source in declared, f"volume {source} is not declared"
                used[target] = source
    # Journal, Prometheus' TSDB and Grafana's database survive `docker compose down`.
    assert {"/var/lib/mmbot", "/prometheus", "/var/lib/grafana"} <= used.keys()


def test_compose_demo_runs_the_dry_run_with_its_config(compose: dict[str, Any]) -> None:
    mmbot = compose["services"]["mmbot"]
    command = mmbot["command"]
    assert command[0] == "run"
    assert "--dry-run" in command
    config_path = command[command.index("--config") + 1]
    host_config, read_only = _host_mount(mmbot, config_path)
    assert host_config == ROOT / "config" / "dry-run.toml"
    assert read_only, "the config is mounted read-only"
    # No credentials in the demo: a key id left in would look like a half-done live setup.
    assert not any("KALSHI" in key for key in mmbot.get("environment", {}))
    assert not mmbot.get("secrets")


@pytest.fixture(scope="module")
def mmbot_settings(compose: dict[str, Any]) -> Any:
    """The settings the compose mmbot runs with: the mounted file plus its environment.

    Loading them proves the mounted config is valid and every MMBOT_* variable in the
    compose file is a real setting (mmbot rejects unknown ones).
    """
    mmbot = compose["services"]["mmbot"]
    environment = {key: str(value) for key, value in mmbot["environment"].items()}
    command = mmbot["command"]
    host_config, _ = _host_mount(mmbot, command[command.index("--config") + 1])
    with pytest.MonkeyPatch.context() as patch:
        # Only the compose file's variables: none from the shell running the tests.
        clear_mmbot_env(patch, ignore_case=False)
        for key, value in environment.items():
            if key != "MMBOT_CONFIG":  # the explicit path below stands for it
                patch.setenv(key, value)
        return load_settings(host_config)


def test_compose_settings_wire_metrics_journal_and_kill_switch(
    compose: dict[str, Any], mmbot_settings: Any
) -> None:
    mmbot = compose["services"]["mmbot"]
    environment = mmbot["environment"]
    command = mmbot["command"]
    assert environment["MMBOT_CONFIG"] == command[command.index("--config") + 1]
    assert mmbot_settings.metrics.enabled
    # Reachable from the Prometheus container, not only from loopback.
    assert mmbot_settings.metrics.host == "0.0.0.0"  # noqa: S104
    port = mmbot_settings.metrics.port
    assert _container_port(mmbot, port) == port
    named = {target for source, target, _ in _mounts(mmbot) if not _is_host_path(source)}
    # The journal and the kill-switch file live on volumes, so both outlive the container.
    assert mmbot_settings.journal.path.parent.as_posix() in named
    assert mmbot_settings.risk.kill_switch_file.as_posix() == "/var/run/mmbot/STOP"
    assert mmbot_settings.risk.kill_switch_file.parent.as_posix() in named


def test_stop_grace_period_outlasts_the_shutdown(compose: dict[str, Any]) -> None:
    grace = _duration_seconds(compose["services"]["mmbot"]["stop_grace_period"])
    production = load_settings(ROOT / "config" / "production.example.toml")
    longest = max(ShutdownSettings().timeout_seconds, production.shutdown.timeout_seconds)
    # Deleting the quotes, then flushing and closing the journal, within the grace period.
    assert grace >= 2 * longest


def test_ports_are_published_on_loopback(compose: dict[str, Any]) -> None:
    expected = {"mmbot": 9100, "prometheus": 9090, "grafana": 3000}
    for name, port in expected.items():
        specs = [str(spec) for spec in compose["services"][name]["ports"]]
        assert f"127.0.0.1:{port}:{port}" in specs, name


def test_prometheus_config_and_rules_are_mounted(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    service = compose["services"]["prometheus"]
    flags = dict(flag.split("=", 1) for flag in service["command"])
    config, read_only = _host_mount(service, flags["--config.file"])
    assert config == PROMETHEUS
    assert read_only
    assert prometheus["rule_files"], "the alert rules are loaded"
    for rule_file in prometheus["rule_files"]:
        assert "*" not in rule_file, "name the rule file, so a missing mount fails loudly"
        host, read_only = _host_mount(service, rule_file)
        assert host == ALERTS
        assert read_only
    data_dir = flags["--storage.tsdb.path"]
    assert data_dir in {t for s, t, _ in _mounts(service) if not _is_host_path(s)}


def test_prometheus_scrapes_the_mmbot_service(
    compose: dict[str, Any], prometheus: dict[str, Any], mmbot_settings: Any
) -> None:
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    job = jobs["mmbot"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (static,) = job["static_configs"]
    (target,) = static["targets"]
    host, _, port = target.partition(":")
    assert host in compose["services"]
    assert host == "mmbot"
    assert int(port) == mmbot_settings.metrics.port
    interval = job.get("scrape_interval", prometheus["global"]["scrape_interval"])
    assert _duration_seconds(interval) <= 30


def test_every_mmbot_target_carries_its_shard(
    prometheus: dict[str, Any], mmbot_settings: Any
) -> None:
    # The dashboard's $shard variable reads the scrape target's shard label: the target's
    # kalshi.shard_key, or "unsharded" for a daemon that takes the whole feed.
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    for static in jobs["mmbot"]["static_configs"]:
        shard = static.get("labels", {}).get("shard")
        assert shard, f"{static['targets']}: no shard label"
        assert re.fullmatch(r"\d{1,2}|unsharded", str(shard)), shard
    # The demo's one target runs the compose settings.
    (static,) = jobs["mmbot"]["static_configs"]
    key = mmbot_settings.kalshi.shard_key
    assert str(static["labels"]["shard"]) == ("unsharded" if key is None else str(key))


def test_job_names_in_queries_are_scraped(
    prometheus: dict[str, Any], exprs: list[tuple[str, str]]
) -> None:
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    for where, expr in exprs:
        for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr):
            assert job in jobs, f"{where}: job {job!r} is not scraped"


def test_grafana_provisioning_is_mounted(
    compose: dict[str, Any], datasource: dict[str, Any]
) -> None:
    grafana = compose["services"]["grafana"]
    provisioning, read_only = _host_mount(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    assert read_only
    assert DATASOURCE.is_relative_to(provisioning)
    assert DASHBOARD_PROVIDER.is_relative_to(provisioning)

    (provider,) = _yaml(DASHBOARD_PROVIDER)["providers"]
    assert provider["type"] == "file"
    dashboards, read_only = _host_mount(grafana, provider["options"]["path"])
    assert dashboards == DASHBOARD.parent
    assert read_only
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == provider["options"]["path"]
    assert (dashboards / Path(home).name).is_file()


def test_grafana_datasource_points_at_the_prometheus_service(
    compose: dict[str, Any], prometheus: dict[str, Any], datasource: dict[str, Any]
) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["uid"]
    match = re.fullmatch(r"http://([a-z0-9_-]+):(\d+)/?", datasource["url"])
    assert match, datasource["url"]
    assert match.group(1) == "prometheus"
    assert int(match.group(2)) == _container_port(compose["services"]["prometheus"], 9090)
    # Grafana's minimum step must match the scrape interval for $__rate_interval to be right.
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_grafana_admin_password_comes_from_the_environment(compose: dict[str, Any]) -> None:
    password = compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}", password)


# ------------------------------------------------------------------------------ alerts


def test_alerts_are_exactly_the_documented_ones(rules: list[dict[str, Any]]) -> None:
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) == set(ALERT_SEVERITY)


def test_every_alert_is_complete(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        name = rule["alert"]
        assert str(rule["expr"]).strip(), name
        _duration_seconds(str(rule["for"]))
        assert rule["labels"]["severity"] == ALERT_SEVERITY[name], name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        assert "runbook" not in annotations, name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE_TEMPLATE}#{name.lower()}", name


def test_alerts_watch_their_metrics(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        expr = str(rule["expr"])
        names = set(METRIC_NAME.findall(expr)) | set(re.findall(r"\bup\b|\bprocess_\w+", expr))
        assert ALERT_METRICS[rule["alert"]] <= names, rule["alert"]


def test_alert_thresholds(rules: list[dict[str, Any]]) -> None:
    by_name = {rule["alert"]: " ".join(str(rule["expr"]).split()) for rule in rules}
    assert "absent(up" in by_name["MmbotDown"]
    assert "0.9 * mmbot_exposure_limit_dollars" in by_name["MmbotExposureNearLimit"]
    assert "mmbot_exposure_limit_dollars > 0" in by_name["MmbotExposureNearLimit"]
    assert "increase(mmbot_rate_limited_total[5m]) > 0" in by_name["MmbotRateLimited"]
    # A ratio alone would page on one decline out of one acceptance.
    assert re.search(
        r"mmbot_quotes_accepted_total\[\d+m\]\)\s*>=?\s*\d+", by_name["MmbotDeclineRateSpike"]
    )
    # Over the limit, not near it; the loss alerts read the P&L as a loss (negated).
    assert (
        "mmbot_exposure_dollars > mmbot_exposure_limit_dollars" in by_name["MmbotExposureOverLimit"]
    )
    assert "mmbot_exposure_limit_dollars > 0" in by_name["MmbotExposureOverLimit"]
    assert (
        "-mmbot_daily_pnl_dollars >= 0.8 * mmbot_daily_loss_limit_dollars"
        in by_name["MmbotDailyLossNearLimit"]
    )
    assert (
        "-mmbot_daily_pnl_dollars >= mmbot_daily_loss_limit_dollars"
        in by_name["MmbotDailyLossLimitReached"]
    )
    for name in ("MmbotDailyLossNearLimit", "MmbotDailyLossLimitReached"):
        assert "mmbot_daily_loss_limit_dollars > 0" in by_name[name], name
    # A stall needs RFQs to have arrived, and is not one while the kill switch is on.
    stalled = by_name["MmbotQuotingStalled"]
    assert re.search(r"increase\(mmbot_rfqs_received_total\[\d+m\]\) >= \d+", stalled)
    assert "mmbot_kill_switch == 0" in stalled
    assert "mmbot_ready == 1" in stalled
    assert "increase(mmbot_confirms_failed_total[10m]) > 0" in by_name["MmbotConfirmsFailing"]
    # The p99 objective sits on a bucket boundary (25 ms) and needs a minimum quote rate.
    slow = by_name["MmbotRfqToQuoteSlow"]
    assert "histogram_quantile(0.99, sum by (job, instance, shard, le)" in slow
    assert "> 0.025" in slow
    assert re.search(r"rate\(mmbot_rfq_to_quote_seconds_count\[5m\]\)\) >= 0\.\d+", slow)
    body, _ = Metrics().render()
    assert 'mmbot_rfq_to_quote_seconds_bucket{le="0.025"}' in body.decode()
    assert 'changes(process_start_time_seconds{job="mmbot"}[1h]) > 2' in by_name["MmbotRestarting"]
    for rule in rules:
        if rule["alert"] == "MmbotNotReady":
            assert _duration_seconds(str(rule["for"])) >= 60


def test_readme_has_the_alerts_section() -> None:
    # Every rule's runbook_url links to its alert's own heading in the Alerts section.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^#+\s+Alerts\s*$", readme, re.MULTILINE), "README.md needs an Alerts heading"
    for name in ALERT_SEVERITY:
        assert re.search(rf"^#+\s+`{name}`\s*$", readme, re.MULTILINE), f"no README heading {name}"
    assert RUNBOOK_BASE_VARIABLE in readme


def test_runbook_base_is_one_operator_setting(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    # prometheus.yml takes the base from the environment (Prometheus 3 expands ${...} in
    # external labels; 2.x needs the feature flag), and compose passes it through with a
    # fallback, so the demo starts (and `docker compose config` passes) when it is unset.
    assert prometheus["global"]["external_labels"]["runbook_base"] == (
        f"${{{RUNBOOK_BASE_VARIABLE}}}"
    )
    service = compose["services"]["prometheus"]
    value = service["environment"][RUNBOOK_BASE_VARIABLE]
    match = re.fullmatch(rf"\$\{{{RUNBOOK_BASE_VARIABLE}:-([^}}]+)\}}", value)
    assert match, value
    assert "://" not in match.group(1), "the fallback must not invent a host"
    major = int(service["image"].rpartition(":")[2].lstrip("v").split(".")[0])
    flags = " ".join(service["command"])
    assert major >= 3 or "expand-external-labels" in flags
    deploy_readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert RUNBOOK_BASE_VARIABLE in deploy_readme


# ------------------------------------------------------------------------------ dashboard


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "mmbot"
    assert dashboard["title"] == "mmbot"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None, "a provisioned dashboard carries no database id"


def test_dashboard_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid["x"], grid["y"], grid["w"], grid["h"]))
    for i, (title_a, xa, ya, wa, ha) in enumerate(boxes):
        for title_b, xb, yb, wb, hb in boxes[i + 1 :]:
            apart = xa + wa <= xb or xb + wb <= xa or ya + ha <= yb or yb + hb <= ya
            assert apart, f"{title_a!r} overlaps {title_b!r}"


def test_every_panel_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    uid = datasource["uid"]
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == uid, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            assert target["expr"].strip(), panel["title"]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in dashboard.get("templating", {}).get("list", [])}


def test_dashboard_uses_no_undefined_variables(dashboard: dict[str, Any]) -> None:
    # Only Grafana's built-in variables and the dashboard's own may appear.
    defined = set(_variables(dashboard))
    assert defined == set(DASHBOARD_VARIABLES)
    for where, expr in _dashboard_exprs(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", _without_grafana_variables(expr)))
        assert used <= defined, f"{where}: undefined {sorted(used - defined)}"


def test_dashboard_variables_select_instances_and_shards(
    dashboard: dict[str, Any], datasource: dict[str, Any], exposition: dict[str, Series]
) -> None:
    variables = _variables(dashboard)
    for name in DASHBOARD_VARIABLES:
        var = variables[name]
        assert var["type"] == "query", name
        assert var["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, name
        assert var["multi"] is True, f"{name}: several instances or shards at once"
        assert var["includeAll"] is True, f"{name}: an All option"
        # All as ".*" rather than a list of the values seen: it also matches a target
        # scraped without a shard label, and a target that appeared after the page loaded.
        assert var["allValue"] == ".*", name
        assert var["current"]["value"] == ["$__all"], f"{name}: All selected by default"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query == var["definition"], name
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, f"{name}: {query}"
        selector, label = match.groups()
        assert label == name, query
        # Read from up, which a target has even while it is down.
        (metric, matchers) = SELECTOR.fullmatch(selector).groups()  # type: ignore[union-attr]
        assert metric == "up", query
        assert 'job="mmbot"' in matchers, query
        for label_name in MATCHER_LABEL.findall(matchers):
            assert label_name in _known_labels(exposition, metric), query
    # Instances are offered within the selected shards.
    assert 'shard=~"$shard"' in variables["instance"]["definition"]
    order = [var["name"] for var in dashboard["templating"]["list"]]
    assert order.index("shard") < order.index("instance"), "instance depends on shard"


def test_every_dashboard_query_filters_on_instance_and_shard(dashboard: dict[str, Any]) -> None:
    checked = 0
    for where, expr in _dashboard_exprs(dashboard):
        for name, matchers in ANY_SELECTOR.findall(expr):
            for wanted in DASHBOARD_FILTERS:
                assert wanted in matchers, f"{where}: {name} lacks {wanted}\n{expr}"
            checked += 1
    assert checked >= len(_dashboard_exprs(dashboard))


def test_every_dashboard_selector_filters_in_the_syntax_tree(dashboard: dict[str, Any]) -> None:
    # The regex check above, through a real parser: no selector escapes the variables.
    promql_parser = pytest.importorskip("promql_parser")

    def selectors(node: Any) -> Iterator[Any]:
        kind = type(node).__name__
        if kind == "VectorSelector":
            yield node
            return
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and type(child).__name__ not in ("str", "int", "float"):
                yield from selectors(child)
        for arg in getattr(node, "args", None) or []:
            yield from selectors(arg)

    for where, expr in _dashboard_exprs(dashboard):
        found = list(selectors(promql_parser.parse(_without_grafana_variables(expr))))
        assert found, where
        for selector in found:
            regexes = {
                m.name: m.value
                for m in selector.matchers.matchers
                if str(m.op).endswith("Re") and "Not" not in str(m.op)
            }
            for name in DASHBOARD_VARIABLES:
                assert regexes.get(name) == f"${name}", f"{where}: {selector.name} {name}"


def test_dashboard_shows_todays_pnl_against_the_daily_loss_limit(
    dashboard: dict[str, Any],
) -> None:
    (panel,) = [
        p
        for p in _panels(dashboard["panels"])
        if p.get("title") == "Today's P&L vs daily loss limit"
    ]
    assert panel["type"] == "timeseries"
    assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    exprs = [" ".join(target["expr"].split()) for target in panel["targets"]]
    realised, daily, limit = exprs
    assert "mmbot_realized_pnl_today_dollars{" in realised
    assert "mmbot_daily_pnl_dollars{" in daily
    # The limit is a loss: drawn below zero, where the daily P&L would meet it.
    assert limit.startswith("-")
    assert "mmbot_daily_loss_limit_dollars{" in limit
    # Per daemon: each one's P&L against its own limit, not a sum against one limit.
    for expr in exprs:
        assert "by (instance, shard)" in expr, expr
    assert panel["description"].strip()


def test_dashboard_shows_every_contract_family(dashboard: dict[str, Any]) -> None:
    queried = {
        name for _, expr in _dashboard_exprs(dashboard) for name in METRIC_NAME.findall(expr)
    }
    missing = [family for family in CONTRACT if not _family_samples(family) & queried]
    assert not missing, f"no dashboard panel queries {missing}"


def test_dashboard_shows_every_exported_family(dashboard: dict[str, Any]) -> None:
    # Beyond the contract: a family nobody can see is a family nobody will notice.
    queried = {
        name for _, expr in _dashboard_exprs(dashboard) for name in METRIC_NAME.findall(expr)
    }
    missing = [family for family in FAMILIES if not _family_samples(family) & queried]
    assert not missing, f"no dashboard panel queries {missing}"


def test_dashboard_latency_quantiles(dashboard: dict[str, Any]) -> None:
    exprs = [" ".join(expr.split()) for _, expr in _dashboard_exprs(dashboard)]
    for histogram in ("mmbot_rfq_to_quote_seconds", "mmbot_confirm_latency_seconds"):
        for quantile in ("0.5", "0.9", "0.99"):
            pattern = (
                rf"histogram_quantile\({quantile}, sum by \(le\) "
                rf"\(rate\({histogram}_bucket(\{{[^}}]*\}})?\["
            )
            assert any(re.search(pattern, expr) for expr in exprs), (histogram, quantile)


# ------------------------------------------------------------------------------ names, labels


def test_every_queried_metric_is_exported(
    exprs: list[tuple[str, str]], exposition: dict[str, Series]
) -> None:
    for where, expr in exprs:
        for name in METRIC_NAME.findall(expr):
            assert name in exposition, f"{where}: {name} is not in mmbot's exposition"


def test_label_matchers_name_labels_the_metric_has(
    exprs: list[tuple[str, str]], exposition: dict[str, Series]
) -> None:
    checked = 0
    for where, expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            for label in MATCHER_LABEL.findall(matchers):
                assert label in _known_labels(exposition, name), f"{where}: {name} has no {label!r}"
                checked += 1
    assert checked > 0


def test_grouping_labels_exist_on_the_queried_metrics(
    exprs: list[tuple[str, str]], exposition: dict[str, Series]
) -> None:
    # by/without/on/ignoring/group_*: a label must belong to some metric of the expression.
    # (The syntax-tree test below checks each clause against its own operands.)
    checked = 0
    for where, expr in exprs:
        names = set(METRIC_NAME.findall(expr)) | ({"up"} if re.search(r"\bup\b", expr) else set())
        available = frozenset().union(*(_known_labels(exposition, name) for name in names))
        for _, labels in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in labels.split(","))):
                assert label in available, f"{where}: no queried metric has label {label!r}"
                checked += 1
    assert checked > 0


def test_the_label_checks_catch_a_wrong_label(exposition: dict[str, Series]) -> None:
    # The checks above pass on the real files; make sure they would fail on a wrong one.
    declined = _known_labels(exposition, "mmbot_quotes_declined_total")
    assert "reason" in declined
    assert "endpoint" not in declined
    assert "endpoint" in _known_labels(exposition, "mmbot_rest_requests_total")


# ------------------------------------------------------------------------------ PromQL syntax


class _LabelError(AssertionError):
    pass


class _Checker:
    """Walks a PromQL syntax tree and works out the label names each node's result has.

    It fails on: an unknown metric, a matcher or grouping label the operand lacks, a
    one-to-one binary operation whose sides cannot match (different label sets and no
    on/ignoring), rate()/increase() over a gauge, and a counter or histogram series read
    raw instead of through a range function.
    """

    RANGE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
    KEEP_LABELS = frozenset({"topk", "bottomk", "limitk", "limit_ratio"})

    def __init__(self, exposition: dict[str, Series]) -> None:
        self.exposition = exposition

    def labels(self, node: Any, *, in_range: bool = False) -> frozenset[str] | None:
        """The label names of ``node``'s result; None for a scalar or string."""
        kind = type(node).__name__
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise _LabelError(f"unexpected PromQL node {kind}")
        return method(node, in_range)

    def _NumberLiteral(self, node: Any, in_range: bool) -> None:
        return None

    def _StringLiteral(self, node: Any, in_range: bool) -> None:
        return None

    def _ParenExpr(self, node: Any, in_range: bool) -> frozenset[str] | None:
        return self.labels(node.expr)

    def _UnaryExpr(self, node: Any, in_range: bool) -> frozenset[str] | None:
        return self.labels(node.expr)

    def _SubqueryExpr(self, node: Any, in_range: bool) -> frozenset[str] | None:
        return self.labels(node.expr)

    def _MatrixSelector(self, node: Any, in_range: bool) -> frozenset[str] | None:
        return self.labels(node.vector_selector, in_range=True)

    def _VectorSelector(self, node: Any, in_range: bool) -> frozenset[str]:
        name = node.name
        if name not in self.exposition:
            raise _LabelError(f"{name} is not exported")
        series = self.exposition[name]
        if series.kind in ("counter", "histogram") and not in_range:
            raise _LabelError(f"{name} is a {series.kind} series read without rate()/increase()")
        have = series.labels | TARGET_LABELS
        for matcher in node.matchers.matchers:
            if matcher.name != "__name__" and matcher.name not in have:
                raise _LabelError(f"{name} has no label {matcher.name!r}")
        return have

    def _Call(self, node: Any, in_range: bool) -> frozenset[str] | None:
        name = node.func.name
        args = [self.labels(arg) for arg in node.args]
        if name in self.RANGE_FUNCTIONS:
            (selector,) = [arg for arg in node.args if type(arg).__name__ == "MatrixSelector"]
            metric = selector.vector_selector.name
            if self.exposition[metric].kind == "gauge":
                raise _LabelError(f"{name}() over the gauge {metric}")
        if str(node.func.return_type).endswith("Scalar"):
            return None
        vectors = [labels for labels in args if labels is not None]
        if name == "absent":
            # absent() returns one series labelled with the selector's equality matchers.
            selector = node.args[0]
            return frozenset(
                matcher.name
                for matcher in selector.matchers.matchers
                if str(matcher.op).endswith("Equal") and "Not" not in str(matcher.op)
            )
        if name == "histogram_quantile":
            (buckets,) = vectors
            if "le" not in buckets:
                raise _LabelError("histogram_quantile() over a vector without 'le'")
            return buckets - {"le"}
        return vectors[0] if vectors else frozenset()

    def _AggregateExpr(self, node: Any, in_range: bool) -> frozenset[str]:
        inner = self.labels(node.expr)
        assert inner is not None, "aggregation over a scalar"
        if node.param is not None:
            self.labels(node.param)
        modifier = node.modifier
        listed = frozenset(modifier.labels) if modifier is not None else frozenset()
        if missing := listed - inner:
            raise _LabelError(f"{node.op!s} groups by {sorted(missing)}, not on its operand")
        if str(node.op) in self.KEEP_LABELS:
            return inner
        if modifier is None:
            return frozenset()
        if str(modifier.type).endswith("By"):
            return listed
        return inner - listed

    def _BinaryExpr(self, node: Any, in_range: bool) -> frozenset[str] | None:
        lhs = self.labels(node.lhs)
        rhs = self.labels(node.rhs)
        if lhs is None or rhs is None:
            return rhs if lhs is None else lhs
        op = str(node.op)
        modifier = node.modifier
        matching = modifier.matching if modifier is not None else None
        if matching is not None:
            listed = frozenset(matching.labels)
            if str(matching.type).endswith("Include"):  # on (...)
                if missing := listed - (lhs & rhs):
                    raise _LabelError(f"on {sorted(missing)}: not on both sides of {op}")
            elif missing := listed - (lhs | rhs):  # ignoring (...)
                raise _LabelError(f"ignoring {sorted(missing)}: on neither side of {op}")
            group = frozenset(modifier.group_labels or ())
            if missing := group - (lhs | rhs):
                raise _LabelError(f"group_left/right {sorted(missing)} on neither side")
        elif op != "or" and lhs != rhs:
            raise _LabelError(
                f"{op}: sides labelled {sorted(lhs)} and {sorted(rhs)} never match"
                " (aggregate them alike or use on/ignoring)"
            )
        return lhs | rhs if op == "or" else lhs


def test_the_label_checker_rejects_wrong_queries(exposition: dict[str, Series]) -> None:
    promql_parser = pytest.importorskip("promql_parser")
    checker = _Checker(exposition)
    good = (
        "sum by (reason) (rate(mmbot_quotes_declined_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(mmbot_rfq_to_quote_seconds_bucket[5m])))",
        "mmbot_exposure_dollars > 0.9 * mmbot_exposure_limit_dollars",
    )
    bad = (
        "sum by (endpoint) (rate(mmbot_quotes_declined_total[5m]))",
        'rate(mmbot_quotes_declined_total{endpoint="x"}[5m])',
        "histogram_quantile(0.9, sum (rate(mmbot_rfq_to_quote_seconds_bucket[5m])))",
        "sum by (reason) (rate(mmbot_quotes_declined_total[5m]))"
        " / sum(rate(mmbot_quotes_accepted_total[5m]))",
        "rate(mmbot_open_quotes[5m])",
        "mmbot_quotes_created_total",
        "mmbot_no_such_metric",
    )
    for expr in good:
        checker.labels(promql_parser.parse(expr))
    for expr in bad:
        with pytest.raises(_LabelError):
            checker.labels(promql_parser.parse(expr))


def test_every_query_parses_and_its_labels_check(
    exprs: list[tuple[str, str]], exposition: dict[str, Series]
) -> None:
    promql_parser = pytest.importorskip("promql_parser")
    checker = _Checker(exposition)
    for where, expr in exprs:
        try:
            tree = promql_parser.parse(_without_grafana_variables(expr))
        except Exception as exc:  # the binding raises ValueError; be broad about it
            pytest.fail(f"{where}: not valid PromQL: {exc}\n{expr}")
        try:
            checker.labels(tree)
        except _LabelError as exc:
            pytest.fail(f"{where}: {exc}\n{expr}")


# ------------------------------------------------------------------------------ README


def test_deploy_readme_covers_usage_and_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert "docker compose -f deploy/docker-compose.yml up --build" in readme
    for url in ("localhost:3000", "localhost:9090", "localhost:9100"):
        assert url in readme
    # The shard label and the dashboard variables built on it.
    assert "`shard`" in readme
    assert "kalshi.shard_key" in readme
    for variable in DASHBOARD_VARIABLES:
        assert f"`${variable}`" in readme, variable
    for command in (
        "docker compose -f deploy/docker-compose.yml exec mmbot touch /var/run/mmbot/STOP",
        "docker compose -f deploy/docker-compose.yml exec mmbot mmbot quotes cancel-all",
    ):
        assert command in readme
    for path in sorted(DEPLOY.rglob("*")):
        name = path.relative_to(DEPLOY).as_posix()
        # Local files deploy/.gitignore keeps out of git (keys, .env) are not the README's.
        if path.is_file() and name not in {"README.md", ".env"} and not name.startswith("secrets/"):
            assert name in readme, f"README: say what {name} is"


def test_dashboard_counter_panels_show_zero_before_the_first_event(
    dashboard: dict[str, Any],
) -> None:
    # A counter with no samples yet means nothing happened; "No data" reads as broken.
    # Gauges and latencies keep "No data": there, an absent series is news.
    counter_panels = [
        panel
        for panel in _panels(dashboard["panels"])
        if (names := [n for t in panel.get("targets", []) for n in METRIC_NAME.findall(t["expr"])])
        and all(name.endswith("_total") for name in names)
    ]
    assert counter_panels
    silent = [
        panel["title"]
        for panel in counter_panels
        if panel.get("fieldConfig", {}).get("defaults", {}).get("noValue") != "0"
    ]
    assert not silent, f"panels showing No data instead of 0: {silent}"
