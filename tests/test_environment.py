"""Kalshi's two environments: production and demo, each with its own URLs and its own keys.

``kalshi.environment`` picks the documented REST and WebSocket URLs; a URL given outright
still wins (a mock, a private link). Which environment a URL points at is shown where an
operator looks first (the start-up line, ``whoami``), and a refused signature names the
environment that refused it, since a demo key is refused by production and the reverse.
"""

from __future__ import annotations

import pytest

from mmbot.clients import auth_refused_message, describe_exchange
from mmbot.config import ConfigError, Settings, environment_of, load_settings
from mmbot.kalshi.errors import AuthError

DEMO_REST = "https://external-api.demo.kalshi.co/trade-api/v2"
DEMO_WS = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"
PROD_REST = "https://external-api.kalshi.com/trade-api/v2"
PROD_WS = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"


def test_the_environment_picks_kalshis_documented_urls() -> None:
    assert (Settings().kalshi.rest_url, Settings().kalshi.ws_url) == (PROD_REST, PROD_WS)
    demo = Settings(kalshi={"environment": "demo"}).kalshi
    assert (demo.rest_url, demo.ws_url) == (DEMO_REST, DEMO_WS)
    assert Settings(kalshi={"environment": " Demo "}).kalshi.rest_url == DEMO_REST


def test_a_url_given_outright_wins_over_the_environment() -> None:
    kalshi = Settings(kalshi={"environment": "demo", "rest_url": "http://127.0.0.1:8/x"}).kalshi
    assert kalshi.rest_url == "http://127.0.0.1:8/x"
    assert kalshi.ws_url == DEMO_WS  # the one not given still follows the environment


def test_the_environment_set_in_the_environment_variables_reaches_the_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MMBOT_KALSHI__ENVIRONMENT", "demo")
    kalshi = load_settings().kalshi
    assert (kalshi.environment, kalshi.rest_url) == ("demo", DEMO_REST)


def test_an_unknown_environment_is_refused_naming_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"kalshi.environment": "staging"})
    text = str(caught.value.problems[0])
    assert "kalshi.environment" in text
    assert "production" in text
    assert "demo" in text


@pytest.mark.parametrize(
    ("url", "environment"),
    [
        (PROD_REST, "production"),
        (PROD_WS, "production"),
        ("https://api.elections.kalshi.com/trade-api/v2", "production"),
        (DEMO_REST, "demo"),
        ("https://demo-api.kalshi.co/trade-api/v2", "demo"),
        ("http://127.0.0.1:9000/trade-api/v2", "custom"),
    ],
)
def test_every_documented_host_is_known_by_its_environment(url: str, environment: str) -> None:
    assert environment_of(url) == environment


def test_a_refused_key_is_told_which_environment_refused_it() -> None:
    demo = Settings(kalshi={"environment": "demo"}).kalshi
    message = auth_refused_message(AuthError("bad signature", status=401), demo)
    assert message.startswith("authentication refused")
    assert f"Kalshi's demo environment ({DEMO_REST})" in message
    assert "a production key is refused here" in message
    assert 'kalshi.environment = "production"' in message
    production = auth_refused_message(AuthError("bad signature", status=401), Settings().kalshi)
    assert "a demo key is refused here" in production
    # A mock or another server is no Kalshi environment: no hint about one.
    mock = Settings(kalshi={"rest_url": "http://127.0.0.1:9/trade-api/v2"}).kalshi
    assert "environment" not in auth_refused_message(AuthError("x", status=401), mock)


def test_the_start_up_line_names_the_environment() -> None:
    assert describe_exchange(Settings(kalshi={"environment": "demo"}).kalshi) == (
        f"Kalshi demo ({DEMO_REST})"
    )
    mock = Settings(kalshi={"rest_url": "http://127.0.0.1:9/trade-api/v2"}).kalshi
    assert describe_exchange(mock) == "http://127.0.0.1:9/trade-api/v2"
