"""The chart's monitoring of engines (issue 26): the Engines dashboard and the alert rules.

Adversaries: a query naming a series the worker does not export (a dashboard panel that is
silently empty), an alert rule that does not parse, and rules that fire on the wrong input:
a quiet engine below the minimum traffic, a healthy one, an engine that stopped. The rules
are checked and unit-tested by Prometheus' own promtool (`promtool check rules`, `promtool
test rules`), built from the Go module proxy by .ci/install-promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.worker.observability import Metrics
from tests.test_deploy import CHART, helm, kinds, one, render, values_dir  # noqa: F401

DASHBOARDS = CHART / "dashboards"
NAMESPACE = "pipelines"  # tests.test_deploy.render's


def exported() -> set[str]:
    """Every series name a worker's /metrics can show."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    found += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return found


def series(expr: str) -> set[str]:
    return set(re.findall(r"\bjson_engine_\w+", expr))


def test_the_engines_dashboard_queries_only_series_that_exist_and_all_per_engine_ones() -> None:
    dashboard = json.loads((DASHBOARDS / "engines.json").read_text())
    used = {name for expr in queries(dashboard) for name in series(expr)}
    assert used <= exported(), used - exported()
    per_engine = {name for name in exported() if name.startswith("json_engine_engine_")}
    assert per_engine <= used, per_engine - used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] != json.loads((DASHBOARDS / "json-engine.json").read_text())["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["engine"]["multi"] and "engine_id" in variables["engine"]["definition"]
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            if "json_engine_engine_" in expr and "over_cap" not in expr:
                assert 'engine_id=~"$engine"' in expr, panel["title"]
    assert {p["type"] for p in dashboard["panels"]} >= {"table", "timeseries"}


def test_both_dashboards_ship_in_the_config_map(helm: str, values_dir: Path) -> None:  # noqa: F811
    docs = render(helm, values_dir, {"grafanaDashboard": {"enabled": True}})
    (config_map,) = [
        c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    for name in ("json-engine.json", "engines.json"):
        assert json.loads(config_map["data"][name]) == json.loads((DASHBOARDS / name).read_text())


# --- alert rules, with promtool ---------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    explicit = os.environ.get("PROMTOOL")
    cache = Path(os.environ.get("JSON_ENGINE_CACHE", Path.home() / ".cache" / "json-engine"))
    found = explicit or (str(cache / "bin" / "promtool") if (cache / "bin" / "promtool").exists()
                         else shutil.which("promtool"))  # fmt: skip
    if not found:
        pytest.skip("promtool not found (env PROMTOOL or the cache): bash .ci/install-promtool")
    return found


RULE_VALUES = {
    "prometheusRule": {
        "enabled": True,
        "engines": {"costPerHourAbove": 2.5, "for": "5m"},
        "pipeline": {"for": "5m", "notReadyFor": "3m"},
    }
}


@pytest.fixture
def rules_file(helm: str, values_dir: Path, tmp_path: Path) -> Path:  # noqa: F811
    rule = one(render(helm, values_dir, RULE_VALUES), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_the_rules_are_optional_and_name_only_series_that_exist(
    helm: str,  # noqa: F811
    values_dir: Path,  # noqa: F811
    rules_file: Path,
    promtool: str,
) -> None:
    assert not kinds(render(helm, values_dir), "PrometheusRule")
    checked = promtool_run(promtool, "check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "JsonEngineEngineSuccessRateLow",
        "JsonEngineEngineLatencyHigh",
        "JsonEngineEngineSilent",
        "JsonEngineEngineCostOverBudget",
        "JsonEngineLagGrowing",
        "JsonEngineDeadLettersRising",
        "JsonEngineWorkerNotReady",
    } <= names
    for rule in rules:
        assert series(rule["expr"]) <= exported(), rule["alert"]
        assert rule["annotations"]["summary"] and rule["alert"] in rule["annotations"]["runbook"]
    readme = (CHART / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, f"{name} has no runbook line in the chart README"
    no_budget = one(
        render(helm, values_dir, {"prometheusRule": {"enabled": True}}), "PrometheusRule"
    )
    assert "JsonEngineEngineCostOverBudget" not in json.dumps(no_budget)


def ns(labels: str) -> str:
    return "{" + f'namespace="{NAMESPACE}", ' + labels + "}"


def engine(name: str, metric: str, values: str, extra: str = "") -> dict[str, str]:
    labels = f'engine_id="{name}", pod="w-0"' + (f", {extra}" if extra else "")
    return {"series": f"json_engine_engine_{metric}{ns(labels)}", "values": values}


def expect(
    at: str, alert: str, summary: str = "", severity: str = "warning", **labels: str
) -> dict[str, Any]:
    """At `at`, this alert fires once with these labels and summary; without a summary, it
    does not fire."""
    if not summary:
        return {"eval_time": at, "alertname": alert, "exp_alerts": []}
    annotations = {"summary": summary, "runbook": f"charts/json-engine/README.md#alerts: {alert}"}
    fired = {"exp_labels": {"severity": severity, **labels}, "exp_annotations": annotations}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [fired]}


RULE_TESTS = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                # "bad": busy and failing; "quiet": failing on 5 calls; "good": fine
                engine("bad", "success_rate", "0.80x30"),
                engine("bad", "executions", "100x30"),
                engine("quiet", "success_rate", "0.60x30"),
                engine("quiet", "executions", "5x30"),
                engine("good", "success_rate", "0.99x30"),
                engine("good", "executions", "100x30"),
                engine("bad", "latency_ms", "6000x30", 'quantile="0.95"'),
                engine("good", "latency_ms", "300x30", 'quantile="0.95"'),
                # windows of 60 s ending every minute; "gone" stopped at the epoch's 60th s
                engine("good", "window_end_seconds", "0+60x30"),
                engine("gone", "window_end_seconds", "60x30"),
                engine("bad", "window_seconds", "60x30"),
                engine("good", "window_seconds", "60x30"),
                engine("bad", "cost", "0.1x30", 'currency="USD"'),  # 6 USD an hour
                engine("good", "cost", "0.01x30", 'currency="USD"'),  # 0.6 USD an hour
                {"series": "json_engine_regression_alerts_total" + ns('pod="w-0"'),
                 "values": "0x10 1x20"},
                {"series": "json_engine_consumer_lag" + ns('pod="w-0", topic="in", partition="0"'),
                 "values": "20000+1000x30"},
                {"series": "json_engine_consumer_lag" + ns('pod="w-0", topic="ok", partition="0"'),
                 "values": "50000-1000x30"},
                {"series": "json_engine_dead_letters_total"
                           + ns('pod="w-0", channel="engine_execution"'),
                 "values": "0+300x30"},  # 5 per second
                {"series": "json_engine_worker_ready" + ns('pod="w-0"'), "values": "1x30"},
                {"series": "json_engine_worker_ready" + ns('pod="w-1"'), "values": "1x5 0x25"},
            ],
            "alert_rule_test": [
                expect("3m", "JsonEngineEngineSuccessRateLow"),  # not for long enough yet
                expect("10m", "JsonEngineEngineSuccessRateLow",
                       "Engine bad succeeds 80% of its calls (below 0.95)", engine_id="bad"),
                expect("10m", "JsonEngineEngineLatencyHigh",
                       "Engine bad p95 latency is 6000 ms (above 5000 ms)", engine_id="bad"),
                expect("20m", "JsonEngineEngineSilent", "Engine gone has had no window for 19m 0s",
                       engine_id="gone"),
                expect("10m", "JsonEngineEngineCostOverBudget",
                       "Engine bad costs 6 USD per hour (budget 2.5)", engine_id="bad",
                       currency="USD"),
                expect("5m", "JsonEngineEngineRegression"),
                expect("15m", "JsonEngineEngineRegression",
                       "1 regression alerts in 15 minutes: engine windows significantly worse "
                       "than their own baseline (json-engine cat alerts)", severity="info"),
                expect("20m", "JsonEngineLagGrowing",
                       "Consumer lag of in is 40k records and growing", topic="in"),
                expect("15m", "JsonEngineDeadLettersRising",
                       "5 dead letters per second from engine_execution",
                       channel="engine_execution"),
                expect("7m", "JsonEngineWorkerNotReady"),
                expect("12m", "JsonEngineWorkerNotReady",
                       "Worker w-1 is not ready (or not scraped)", severity="critical", pod="w-1"),
            ],
        }
    ],
}  # fmt: skip


def test_the_rules_fire_on_what_they_say_and_nothing_else(rules_file: Path, promtool: str) -> None:
    tests = rules_file.parent / "rules-test.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [rules_file.name], **RULE_TESTS}))
    done = promtool_run(promtool, "test", "rules", str(tests))
    assert done.returncode == 0, done.stdout + done.stderr
