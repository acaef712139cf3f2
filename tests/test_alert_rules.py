"""The alert rules, checked and unit-tested by promtool, and their runbook links.

``promtool check rules`` validates deploy/prometheus/alerts.yml and ``promtool test rules``
runs deploy/prometheus/alerts.test.yml, which feeds the rules series and says which alerts
fire, with their exact labels and annotations. promtool comes from Debian's ``prometheus``
package: without it those two tests skip, unless ``CI_REQUIRE_PROMTOOL=1`` (set by
.ci/run), when they fail. The rest is plain Python and always runs: every alert has a test
case where it fires and one where it stays silent, and every runbook_url is absolute and
leads to the alert's own heading in the README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"
ALERT_TESTS = RULES_DIR / "alerts.test.yml"
README = ROOT / "README.md"

#: How every rule's runbook_url starts: the operator's base address (an external label).
RUNBOOK_BASE = "{{ $externalLabels.runbook_base }}"
REQUIRE_PROMTOOL = "CI_REQUIRE_PROMTOOL"

_HEADING = re.compile(r"^(#{1,6}) +(.+?) *$")


# --------------------------------------------------------------------------- loading


def _yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    """Alert name -> its rule."""
    found: dict[str, dict[str, Any]] = {}
    for group in _yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in found, f"duplicate alert {rule['alert']}"
                found[rule["alert"]] = rule
    assert found
    return found


@pytest.fixture(scope="module")
def unit_tests() -> dict[str, Any]:
    data = _yaml(ALERT_TESTS)
    assert isinstance(data, dict)
    return data


def _cases(unit_tests: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(test group name, alert_rule_test case) for every case of every group."""
    return [
        (group.get("name", "?"), case)
        for group in unit_tests["tests"]
        for case in group.get("alert_rule_test", [])
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _readme_alert_headings() -> list[str]:
    """The headings (as written) inside the README's Alerts section, code blocks skipped."""
    lines = README.read_text(encoding="utf-8").splitlines()
    headings: list[tuple[int, str]] = []
    in_code = False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = _HEADING.match(line)
        if match and not in_code:
            headings.append((len(match[1]), match[2]))
    starts = [i for i, (_, title) in enumerate(headings) if title == "Alerts"]
    assert len(starts) == 1, "README.md needs exactly one Alerts heading"
    level = headings[starts[0]][0]
    inside = []
    for depth, title in headings[starts[0] + 1 :]:
        if depth <= level:
            break
        inside.append(title)
    return inside


# --------------------------------------------------------------------------- promtool


def _promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is not installed (apt-get install --no-install-recommends prometheus)"
    if os.environ.get(REQUIRE_PROMTOOL) == "1":
        pytest.fail(f"{message}, and {REQUIRE_PROMTOOL}=1 requires it")
    pytest.skip(message)


def _run_promtool(*args: str) -> None:
    result = subprocess.run(  # noqa: S603 (a fixed argument list, no shell)
        [_promtool(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"


def test_promtool_checks_the_rules() -> None:
    _run_promtool("check", "rules", str(ALERTS.relative_to(ROOT)))


def test_promtool_unit_tests_pass() -> None:
    _run_promtool("test", "rules", str(ALERT_TESTS.relative_to(ROOT)))


def test_promtool_requirement_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the variable set, a missing promtool is a failure, not a skip.
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv(REQUIRE_PROMTOOL, "1")
    with pytest.raises(pytest.fail.Exception):
        _promtool()
    monkeypatch.delenv(REQUIRE_PROMTOOL)
    with pytest.raises(pytest.skip.Exception):
        _promtool()


# --------------------------------------------------------------------------- coverage


def test_the_unit_tests_load_the_rules(unit_tests: dict[str, Any]) -> None:
    assert [(RULES_DIR / path).resolve() for path in unit_tests["rule_files"]] == [ALERTS]
    for group in unit_tests["tests"]:
        base = group.get("external_labels", {}).get("runbook_base", "")
        # Every group renders runbook_url as Prometheus would: from an absolute base.
        assert re.match(r"https://[^/\s#]+/\S*[^#/]$", base), f"{group.get('name')}: {base!r}"


def test_every_alert_has_a_firing_case(
    rules: dict[str, dict[str, Any]], unit_tests: dict[str, Any]
) -> None:
    firing = {case["alertname"] for _, case in _cases(unit_tests) if case.get("exp_alerts")}
    missing = sorted(set(rules) - firing)
    assert not missing, f"alerts without a test case where they fire: {missing}"
    unknown = sorted({case["alertname"] for _, case in _cases(unit_tests)} - set(rules))
    assert not unknown, f"test cases for alerts that do not exist: {unknown}"


def test_every_alert_has_a_silent_case(
    rules: dict[str, dict[str, Any]], unit_tests: dict[str, Any]
) -> None:
    silent = {case["alertname"] for _, case in _cases(unit_tests) if not case.get("exp_alerts")}
    assert silent, "no test case asserts that an alert stays silent"
    missing = sorted(set(rules) - silent)
    assert not missing, f"alerts without a test case where they stay silent: {missing}"


def test_firing_cases_check_labels_and_the_rendered_runbook_url(
    rules: dict[str, dict[str, Any]], unit_tests: dict[str, Any]
) -> None:
    for group in unit_tests["tests"]:
        base = group["external_labels"]["runbook_base"]
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            rule = rules[name]
            for alert in case.get("exp_alerts") or []:
                where = f"{group.get('name')}: {name} at {case['eval_time']}"
                assert alert["exp_labels"]["severity"] == rule["labels"]["severity"], where
                annotations = alert.get("exp_annotations", {})
                anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE)
                assert annotations.get("runbook_url") == base + anchor, where


# --------------------------------------------------------------------------- runbook links


def test_runbook_urls_are_absolute_and_per_alert(rules: dict[str, dict[str, Any]]) -> None:
    anchors: dict[str, str] = {}
    for name, rule in rules.items():
        annotations = rule["annotations"]
        assert "runbook" not in annotations, f"{name}: the relative runbook annotation is gone"
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_BASE + "#"), f"{name}: {url!r} is not base + anchor"
        anchor = url.removeprefix(RUNBOOK_BASE + "#")
        assert re.fullmatch(r"[a-z0-9_-]+", anchor), f"{name}: anchor {anchor!r}"
        anchors[name] = anchor
    duplicated = sorted({a for a in anchors.values() if list(anchors.values()).count(a) > 1})
    assert not duplicated, f"alerts sharing a runbook anchor: {duplicated}"


def test_runbook_anchors_are_the_alerts_own_readme_headings(
    rules: dict[str, dict[str, Any]],
) -> None:
    headings = {slug(title): title for title in _readme_alert_headings()}
    for name, rule in rules.items():
        anchor = rule["annotations"]["runbook_url"].rpartition("#")[2]
        assert anchor in headings, f"{name}: README.md has no heading with anchor #{anchor}"
        assert headings[anchor].strip("`") == name, f"{name}: #{anchor} is {headings[anchor]!r}"


def test_slug_matches_github() -> None:
    assert slug("`MmbotDown`") == "mmbotdown"
    assert slug("Shutdown, crashes and restarts") == "shutdown-crashes-and-restarts"
