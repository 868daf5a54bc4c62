"""The chart's PromQL, checked by Prometheus's own parser and rule engine (promtool): the
alerts are unit-tested on synthetic series, the dashboard's queries are parsed.

promtool comes from Debian's prometheus package (tests/run.sh extracts it into .venv/bin
without installing the package, so no Prometheus server starts). Outside run.sh the tests
skip when promtool is missing, unless SWITCHYARD_REQUIRE_PROMTOOL=1 (run.sh sets it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import CHART, NAMESPACE, fullname, rendered_set


def promtool() -> str:
    beside = Path(sys.executable).with_name("promtool")
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if not found:
        if os.environ.get("SWITCHYARD_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing (tests/run.sh puts it in .venv/bin)")
        pytest.skip("promtool not found: run tests/run.sh, or put promtool on PATH")
    return found


EDGE = {"namespace": NAMESPACE, "job": fullname("-edge-metrics")}
OPERATOR = {"namespace": NAMESPACE, "job": fullname("-operator-metrics")}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def transfers(succeeded_per_min: float, failed_per_min: float, rejected_per_min: float = 0) -> list[dict[str, str]]:
    # Counters over 30 minutes, one sample a minute, on two edge pods.
    out = []
    for pod in ("edge-a", "edge-b"):
        for result, reason, per_min in (
            ("succeeded", "", succeeded_per_min),
            ("failed", "target-no-answer", failed_per_min),
            ("rejected", "no-refer-url", rejected_per_min),
        ):
            out.append(series("switchyard_edge_transfers_total", {**EDGE, "pod": pod, "result": result, "reason": reason}, f"0+{per_min / 2}x30"))
    return out


def run_rule_tests(tmp_path: Path, rule: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool(), "test", "rules", str(spec)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def the_rule() -> dict[str, Any]:
    [rule] = rendered_set("monitoring").of_kind("PrometheusRule")
    return rule


RATIO_LABELS = {**EDGE, "severity": "warning", "team": "telephony"}
RATIO_ANNOTATIONS = {
    "summary": "More than 10% of blind transfers fail",
    "description": (
        "20% of the blind transfers run by the Switchyard edge in namespace switchyard failed "
        "over the last 5 minutes. Break them down by reason with "
        'sum by (reason) (rate(switchyard_edge_transfers_total{result="failed"}[5m])).'
    ),
}


def test_transfer_failure_ratio_alert_fires_on_a_high_ratio_only(tmp_path):
    at = "25m"
    alert = "SwitchyardTransferFailureRatioHigh"
    run_rule_tests(
        tmp_path,
        the_rule(),
        [
            {   # 20 % of transfers fail, 10 a minute: above the 10 % threshold for > 10 min.
                "interval": "1m",
                "input_series": transfers(8, 2),
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": RATIO_LABELS, "exp_annotations": RATIO_ANNOTATIONS}]}],
            },
            {   # ... but not before it has lasted `for: 10m`.
                "interval": "1m",
                "input_series": transfers(8, 2),
                "alert_rule_test": [{"eval_time": "8m", "alertname": alert, "exp_alerts": []}],
            },
            {   # 5 % fail: below the threshold.
                "interval": "1m",
                "input_series": transfers(19, 1),
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            },
            {   # Every transfer fails, but there are too few to page (under minRate 0.01/s).
                "interval": "1m",
                "input_series": transfers(0, 0.4),
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            },
            {   # Refused REFERs are not failures.
                "interval": "1m",
                "input_series": transfers(10, 0, rejected_per_min=50),
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            },
        ],
    )


def test_operator_without_a_leader_alerts(tmp_path):
    alert = "SwitchyardOperatorNoLeader"

    def leaders(a: str, b: str) -> list[dict[str, str]]:
        return [
            series("switchyard_operator_is_leader", {**OPERATOR, "pod": "operator-a"}, a),
            series("switchyard_operator_is_leader", {**OPERATOR, "pod": "operator-b"}, b),
        ]

    expected = [{
        "exp_labels": {"severity": "critical", "team": "telephony"},
        "exp_annotations": {
            "summary": "No Switchyard operator replica holds the lease",
            "description": (
                "PhoneNumber changes are not reaching the Redis routing table. Check the operator "
                f"pods and the Lease {fullname('-operator')} in namespace {NAMESPACE}."
            ),
        },
    }]
    run_rule_tests(
        tmp_path,
        the_rule(),
        [
            {"interval": "1m", "input_series": leaders("1x20", "0x20"), "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": []}]},
            {"interval": "1m", "input_series": leaders("0x20", "0x20"), "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": expected}]},
            # No operator scraped at all counts as no leader too.
            {"interval": "1m", "input_series": [], "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": expected}]},
        ],
    )


def test_edge_redis_errors_alert(tmp_path):
    alert = "SwitchyardEdgeStoreErrors"
    errors = [series("switchyard_edge_store_errors_total", {**EDGE, "pod": "edge-a"}, "0+3x20")]
    quiet = [series("switchyard_edge_store_errors_total", {**EDGE, "pod": "edge-a"}, "0x20")]
    expected = [{
        "exp_labels": {"severity": "critical", "team": "telephony", "namespace": NAMESPACE},
        "exp_annotations": {
            "summary": "Switchyard edge pods cannot use Redis",
            # 3 errors a minute on one pod.
            "description": (
                "The edge reports 0.05 Redis errors per second: calls and transfers that need "
                "Redis fail. Check Redis and the network between the edge pods and it."
            ),
        },
    }]
    run_rule_tests(
        tmp_path,
        the_rule(),
        [
            {"interval": "1m", "input_series": errors, "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": expected}]},
            {"interval": "1m", "input_series": quiet, "alert_rule_test": [{"eval_time": "15m", "alertname": alert, "exp_alerts": []}]},
        ],
    )


def test_dashboard_queries_parse(tmp_path):
    dashboard = json.loads((CHART / "dashboards" / "switchyard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    # Grafana's variables, as Grafana would substitute them.
    rules = [
        {"record": f"dashboard:query{i}", "expr": e.replace("$__rate_interval", "2m").replace("$namespace", ".*")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
