"""The README must stay true: configuration reference, metrics, alerts, commands, examples.

Each test reads README.md and compares it with the code it documents, so a setting, metric
family or alert added without documentation (or documented but gone) fails the suite.
The worked strategy plug-in in examples/strategy_plugin/ is run for real: its own tests,
the README's test block, loading by reference and entry point, and a dry-run.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mmbot.cli import build_parser
from mmbot.config import ENV_NESTED_DELIMITER, ENV_PREFIX, ConfigKey, config_keys
from mmbot.observability import FAMILIES, PROCESS_FAMILIES
from mmbot.strategy import load_strategy_class
from tests.support.env import subprocess_env
from tests.support.readme import _headings, _readme, fenced_blocks, section

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CI_RUN = ROOT / ".ci" / "run"
PLUGIN = ROOT / "examples" / "strategy_plugin"
PLUGIN_MODULE = PLUGIN / "acme_strategies" / "book_spread.py"
PLUGIN_REF = "acme_strategies.book_spread:BookSpread"


# --------------------------------------------------------------------------- reading


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table's body rows in ``text`` (header and rule skipped)."""
    rows: list[list[str]] = []
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            assert len(table) >= 2, f"a table needs a header and a rule: {table[0]}"
            assert re.fullmatch(r"\|( *:?-{3,}:? *\|)+", table[1]), f"no rule under {table[0]}"
            rows += [
                [cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in table[2:]
            ]
            table = []
    return rows


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected a single `code` span, got {cell!r}"
    return match[1]


# --------------------------------------------------------------------------- configuration


def env_var(spec: ConfigKey) -> str:
    return (ENV_PREFIX + spec.key.replace(".", ENV_NESTED_DELIMITER)).upper()


def render_default(value: Any) -> str:
    """A default as the reference table writes it: TOML-like, in a code span, or 'unset'."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, int | Decimal):
        text = str(value)
    elif isinstance(value, str | Path):
        text = json.dumps(str(value))
    else:
        text = json.dumps(value)
    return f"`{text}`"


def reference_rows() -> dict[str, list[str]]:
    rows = table_rows(section("Configuration reference"))
    assert rows, "the configuration reference table is empty"
    by_key: dict[str, list[str]] = {}
    for row in rows:
        assert len(row) == 4, f"expected key | environment variable | default | meaning: {row}"
        key = _code(row[0])
        assert key not in by_key, f"{key} is listed twice"
        by_key[key] = row
    return by_key


def test_config_reference_has_every_model_key_and_no_other() -> None:
    documented = set(reference_rows())
    model = {spec.key for spec in config_keys()}
    assert not model - documented, f"settings missing from the README: {sorted(model - documented)}"
    assert not documented - model, f"README keys not in the model: {sorted(documented - model)}"


def test_config_reference_rows_match_the_model() -> None:
    rows = reference_rows()
    problems = []
    for spec in config_keys():
        _, env, default, meaning = rows[spec.key]
        if _code(env) != env_var(spec):
            problems.append(f"{spec.key}: environment variable {env}, expected `{env_var(spec)}`")
        if default != render_default(spec.default):
            problems.append(
                f"{spec.key}: default {default}, expected {render_default(spec.default)}"
            )
        if spec.secret and "secret" not in meaning.lower():
            problems.append(f"{spec.key}: a secret, but its meaning does not say so")
        if not meaning:
            problems.append(f"{spec.key}: no meaning")
    assert not problems, "\n".join(problems)


def test_config_reference_is_in_declaration_order() -> None:
    # The README says the table follows check-config's order.
    assert list(reference_rows()) == [spec.key for spec in config_keys()]


@pytest.mark.parametrize("spec", config_keys(), ids=lambda spec: spec.key)
def test_flags_exist_for_exactly_the_scalar_non_secret_keys(spec: ConfigKey) -> None:
    # The README promises a flag per scalar key except secrets, spelled as the key.
    parser = build_parser()
    argv = [f"--{spec.key}", "1", "check-config"]
    if spec.scalar and not spec.secret:
        assert getattr(parser.parse_args(argv), spec.key) == "1"
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


# --------------------------------------------------------------------------- quick start


def test_a_bare_metal_install_uses_the_images_lock_and_script() -> None:
    # The image installs with docker/install.sh from requirements.lock; a host without a
    # container must get the same versions, not whatever pip resolves that day.
    image_steps = [
        line.removeprefix("RUN ").split()[:2]
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("RUN docker/install.sh")
    ]
    assert image_steps == [["docker/install.sh", "deps"], ["docker/install.sh", "app"]]
    blocks = [code for lang, code in fenced_blocks(section("Deployment")) if lang == "sh"]
    bare = next(code for code in blocks if "docker/install.sh" in code)
    steps = [line.split()[:2] for line in bare.splitlines() if "docker/install.sh" in line]
    assert steps == image_steps


def test_quick_start_is_two_commands_and_the_second_is_what_ci_runs() -> None:
    blocks = fenced_blocks(section("Quick start"))
    assert [lang for lang, _ in blocks] == ["sh"], "Quick start must hold one sh code block"
    commands = [
        line for line in blocks[0][1].splitlines() if line.strip() and not line.startswith("#")
    ]
    assert len(commands) == 2, f"Quick start must be exactly two commands, got {commands}"
    install, test = commands
    assert "pip install -e . " in install
    assert install.endswith("mmbot run --dry-run --duration 60")
    ci_commands = [
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    readme_test = test.split(" && ")[-1]
    assert readme_test == "python -m pytest"
    assert readme_test in ci_commands, ".ci/run must run the README's test command"
    assert "pip install -e '.[dev]'" in test


# --------------------------------------------------------------------------- commands


def _mmbot_commands() -> list[list[str]]:
    """Every ``mmbot ...`` command line in the README's sh blocks, as argv after ``mmbot``."""
    commands = []
    for lang, body in fenced_blocks(_readme()):
        if lang != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words.pop(0)  # VAR=value prefixes
                if words and words[0] == "mmbot":
                    commands.append(words[1:])
    return commands


def test_readme_has_mmbot_commands() -> None:
    assert len(_mmbot_commands()) >= 8


@pytest.mark.parametrize("argv", _mmbot_commands(), ids=shlex.join)
def test_every_mmbot_command_in_the_readme_parses(argv: list[str]) -> None:
    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    first = next((word for word in argv if not word.startswith("-")), None)
    if first == "healthcheck" and "healthcheck" not in subparsers:
        pytest.skip("`mmbot healthcheck` is not registered in this tree yet")
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`mmbot {shlex.join(argv)}` does not parse (exit {exc.code})")


# --------------------------------------------------------------------------- metrics


def test_every_metric_family_is_documented_and_no_other() -> None:
    rows = table_rows(section("Metrics and health"))
    families = FAMILIES | PROCESS_FAMILIES
    documented = {_code(row[0]): row for row in rows if row[0].startswith(("`mmbot_", "`process_"))}
    missing = set(families) - set(documented)
    unknown = set(documented) - set(families)
    assert not missing, f"metric families missing from the README: {sorted(missing)}"
    assert not unknown, f"README metrics that do not exist: {sorted(unknown)}"
    wrong_type = [name for name, row in documented.items() if row[1] != families[name]]
    assert not wrong_type, f"README gives the wrong type for: {wrong_type}"


# --------------------------------------------------------------------------- alerts


def _alert_names() -> list[str]:
    if not ALERTS.exists():
        pytest.skip(f"{ALERTS.relative_to(ROOT)} does not exist yet (the deploy kit adds it)")
    yaml = pytest.importorskip("yaml", reason="pyyaml (a dev dependency) parses the rules")
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    names = [
        rule["alert"] for group in data["groups"] for rule in group["rules"] if "alert" in rule
    ]
    assert names, "no alerting rules found"
    return names


def test_alerts_heading_gives_the_anchors_the_rules_link_to() -> None:
    slugs = [slug(title) for _, title in _headings(_readme())]
    assert slugs.count("alerts") == 1, "README needs exactly one heading with anchor #alerts"
    if ALERTS.exists():
        # Each rule's runbook_url ends in its own alert's anchor: the slug of its heading.
        rules = ALERTS.read_text(encoding="utf-8")
        alert_slugs = [slug(title) for level, title in _headings(section("Alerts")) if level == 4]
        for name in _alert_names():
            anchor = slug(f"`{name}`")
            assert alert_slugs.count(anchor) == 1, f"README needs one heading with anchor #{anchor}"
            assert f'runbook_base }}}}#{anchor}"' in rules, f"{name} does not link to #{anchor}"


def test_every_alert_has_a_paragraph_and_no_other() -> None:
    names = _alert_names()
    alerts = section("Alerts")
    documented = [title.strip("`") for level, title in _headings(alerts) if level == 4]
    missing = [name for name in names if name not in documented]
    unknown = [name for name in documented if name not in names]
    assert not missing, f"alerts without a README paragraph: {missing}"
    assert not unknown, f"README documents alerts that do not exist: {unknown}"
    for name in names:
        body = section(f"`{name}`", alerts).strip()
        assert len(body.split()) >= 20, f"the paragraph on {name} is too short to help anyone"


# --------------------------------------------------------------------------- worked example


def _guide_blocks(lang: str) -> list[str]:
    return [
        body for kind, body in fenced_blocks(section("Strategy author's guide")) if kind == lang
    ]


def test_readme_shows_the_example_plugin_verbatim() -> None:
    shown = [body for body in _guide_blocks("python") if "class BookSpread(" in body]
    assert shown == [PLUGIN_MODULE.read_text(encoding="utf-8")], (
        "the README's worked example must be examples/strategy_plugin/acme_strategies/"
        "book_spread.py, verbatim"
    )


def test_readme_shows_the_example_dry_run_config_verbatim() -> None:
    config = (PLUGIN / "dry-run.toml").read_text(encoding="utf-8")
    assert config in _guide_blocks("toml")


def test_example_loads_by_reference_and_by_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN))
    cls = load_strategy_class(PLUGIN_REF)
    assert cls.__name__ == "BookSpread"
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["mmbot.strategies"]
    assert entry_points == {cls.name: PLUGIN_REF}
    # The README's entry-point snippet is the one the example declares.
    snippet = f'[project.entry-points."mmbot.strategies"]\n{cls.name} = "{PLUGIN_REF}"\n'
    assert snippet in _guide_blocks("toml")


def _readme_env(**extra: str) -> dict[str, str]:
    """A child's environment: the example must work without this checkout on PYTHONPATH."""
    return subprocess_env(
        ignore_case=False, drop=["PYTHONPATH"], **{"PYTHONDONTWRITEBYTECODE": "1", **extra}
    )


@pytest.mark.slow  # runs the example's own test suite in a child pytest
def test_example_tests_and_the_readme_test_pass(tmp_path: Path) -> None:
    plugin = tmp_path / "strategy_plugin"
    shutil.copytree(
        PLUGIN, plugin, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis")
    )
    readme_tests = [body for body in _guide_blocks("python") if "def test_" in body]
    assert readme_tests, "the strategy author's guide must show a test"
    (plugin / "tests" / "test_from_readme.py").write_text("\n\n".join(readme_tests))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider"],
        cwd=plugin,
        env=_readme_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"test_from_readme\.py::\w+ PASSED", output), output
    assert re.search(r"test_book_spread\.py::\w+ PASSED", output), output


def _dry_run_commands() -> list[str]:
    for body in _guide_blocks("sh"):
        lines = body.splitlines()
        if any("mmbot run --dry-run" in line for line in lines):
            return lines
    raise AssertionError("the guide must show how to dry-run the example")


@pytest.mark.slow  # a dry-run daemon child for several seconds
def test_example_dry_run_as_the_readme_shows_it(tmp_path: Path) -> None:
    run_line, query_line = _dry_run_commands()
    words = shlex.split(run_line)
    env_words = [word for word in words if re.fullmatch(r"[A-Z_]+=\S*", word)]
    argv = words[len(env_words) :]
    assert argv[:3] == ["mmbot", "run", "--dry-run"]
    # Shorter and busier than the README's minute, with the journal in tmp_path; a later
    # flag wins over an earlier one.
    journal = tmp_path / "journal.sqlite"
    argv += ["--duration", "8", "--journal.path", str(journal), "--dry_run.rfq_rate", "25"]
    argv += ["--metrics.enabled", "false", "--log.level", "WARNING"]
    env = _readme_env(**dict(word.split("=", 1) for word in env_words))
    env["PYTHONPATH"] = str(ROOT / env["PYTHONPATH"])
    result = subprocess.run(  # noqa: S603 - our own interpreter, the README's arguments
        [sys.executable, "-m", "mmbot", *argv[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    query = shlex.split(query_line)
    assert query[0] == "sqlite3"
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as conn:
        by_strategy = dict(conn.execute(query[-1]).fetchall())
        errors = conn.execute(
            "SELECT count(*) FROM events WHERE kind = 'rfq_skipped' AND reason = 'strategy_error'"
        ).fetchone()[0]
    assert by_strategy.get("book_spread", 0) > 0, by_strategy
    assert errors == 0


def test_in_page_links_point_at_headings() -> None:
    text = _readme()
    anchors = {slug(title) for _, title in _headings(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "expected links between sections"
    broken = sorted(set(links) - anchors)
    assert not broken, f"links to missing headings: {broken}"
