"""Tests for mmbot.logs: rendering, context binding, stdlib routing and redaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from mmbot.logs import (
    REDACTED,
    REDACTED_PRIVATE_KEY,
    clear_registered_secrets,
    configure_logging,
    flush_output,
    get_logger,
    log_context,
    redact_event,
    redact_text,
    register_pem,
    register_secret,
    reset_logging,
)
from tests.support.env import clear_mmbot_env

KEY_ID = "6f0c2d1e-1111-2222-3333-444455556666"
PEM_BODY = [
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ",
]
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_mmbot_env(monkeypatch)
    clear_registered_secrets()
    yield
    reset_logging()
    clear_registered_secrets()


class DrainedStringIO(io.StringIO):
    """An in-memory log destination whose contents include every line already logged.

    Lines reach a stream from a writer thread, so a read first waits for it to catch up.
    """

    def getvalue(self) -> str:
        """Wait for the writer threads to catch up, then return the contents."""
        assert flush_output(), "the log writer did not drain"
        return super().getvalue()


@pytest.fixture
def stream() -> io.StringIO:
    """Return an in-memory log destination."""
    return DrainedStringIO()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Parse every line written to ``stream`` as one JSON object."""
    assert flush_output(), "the log writer did not drain"
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_key_material(text: str) -> None:
    """Fail if the key id or any PEM body line (or its start) occurs in ``text``."""
    assert KEY_ID not in text
    for line in PEM_BODY:
        assert line not in text
        assert line[:16] not in text


# --- rendering -------------------------------------------------------------------------------


def test_json_lines_with_bound_context(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    with log_context(rfq_id="rfq-1", quote_id="q-9", market="KXBTC-25"):
        log.info("quote sent", size=3)
        log.warning("quote slow")
    log.info("outside")

    lines = json_lines(stream)
    assert len(lines) == 3
    first, second, outside = lines
    for entry in (first, second):
        assert entry["rfq_id"] == "rfq-1"
        assert entry["quote_id"] == "q-9"
        assert entry["market"] == "KXBTC-25"
    assert first["event"] == "quote sent"
    assert first["size"] == 3
    assert first["level"] == "info"
    assert second["level"] == "warning"
    assert first["logger"] == "mmbot.test"
    assert first["timestamp"].endswith("Z")
    assert "T" in first["timestamp"]
    assert "rfq_id" not in outside


def test_nested_contexts_restore_outer_values(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    with log_context(market="A"):
        with log_context(market="B", rfq_id="r"):
            log.info("inner")
        log.info("outer")
    inner, outer = json_lines(stream)
    assert (inner["market"], inner["rfq_id"]) == ("B", "r")
    assert outer["market"] == "A"
    assert "rfq_id" not in outer


def test_level_filtering_and_reconfiguration(stream: io.StringIO) -> None:
    configure_logging("WARNING", "json", stream)
    log = get_logger("mmbot.test")
    log.info("hidden")
    log.warning("shown")
    assert [e["event"] for e in json_lines(stream)] == ["shown"]

    second = io.StringIO()
    configure_logging("debug", "json", second)
    log.debug("now visible")
    assert [e["event"] for e in json_lines(second)] == ["now visible"]
    assert [e["event"] for e in json_lines(stream)] == ["shown"]  # old stream detached


def test_configure_twice_does_not_duplicate_output(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info("once")
    assert len(json_lines(stream)) == 1


def test_invalid_level_or_format_is_rejected(stream: io.StringIO) -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD", "json", stream)
    with pytest.raises(ValueError, match="log format"):
        configure_logging("INFO", "xml", stream)  # type: ignore[arg-type]


def test_console_format(stream: io.StringIO) -> None:
    configure_logging("INFO", "console", stream)
    with log_context(rfq_id="rfq-7"):
        get_logger("mmbot.test").info("hello console", private_key=PEM)
    text = stream.getvalue()
    assert "hello console" in text
    assert "rfq_id=rfq-7" in text
    assert "[mmbot.test]" in text or "mmbot.test" in text
    assert "\x1b[" not in text  # not a TTY: no colours
    assert not text.lstrip().startswith("{")
    assert_no_key_material(text)


def test_console_exception(stream: io.StringIO) -> None:
    register_secret(KEY_ID)
    configure_logging("INFO", "console", stream)
    try:
        raise RuntimeError(f"bad key {KEY_ID}")
    except RuntimeError:
        get_logger("mmbot.test").exception("failed")
    text = stream.getvalue()
    assert "Traceback" in text
    assert "RuntimeError: bad key <redacted>" in text
    assert_no_key_material(text)


def test_values_of_unusual_types_are_rendered(stream: io.StringIO) -> None:
    from decimal import Decimal

    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info("typed", price=Decimal("0.53"), big=2**70, tags={"a"})
    (entry,) = json_lines(stream)
    assert entry["price"] == "0.53"
    assert entry["tags"] == ["a"]
    assert int(entry["big"]) == 2**70


# --- stdlib routing --------------------------------------------------------------------------


def test_stdlib_records_use_same_renderer_and_redaction(stream: io.StringIO) -> None:
    register_secret(KEY_ID)
    configure_logging("INFO", "json", stream)
    with log_context(rfq_id="rfq-2"):
        logging.getLogger("httpx").warning("retrying with key %s", KEY_ID)
    (entry,) = json_lines(stream)
    assert entry["logger"] == "httpx"
    assert entry["level"] == "warning"
    assert entry["event"] == f"retrying with key {REDACTED}"
    assert entry["rfq_id"] == "rfq-2"
    assert "timestamp" in entry
    assert_no_key_material(stream.getvalue())


def test_httpx_info_is_quieted(stream: io.StringIO) -> None:
    configure_logging("DEBUG", "json", stream)
    logging.getLogger("httpx").info("HTTP Request: GET https://x 200 OK")
    logging.getLogger("httpcore.connection").debug("connect_tcp.started")
    logging.getLogger("mmbot.something").debug("kept")
    assert [e["event"] for e in json_lines(stream)] == ["kept"]


def test_noisy_loggers_do_not_undercut_a_stricter_level(stream: io.StringIO) -> None:
    configure_logging("ERROR", "json", stream)
    logging.getLogger("httpx").warning("not at ERROR")
    assert stream.getvalue() == ""


def test_stdlib_exception_is_formatted_and_redacted(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    try:
        raise ValueError("could not load " + PEM)
    except ValueError:
        logging.getLogger("websockets.client").error("handshake failed", exc_info=True)
    (entry,) = json_lines(stream)
    assert "Traceback" in entry["exception"]
    assert REDACTED_PRIVATE_KEY in entry["exception"]
    assert_no_key_material(stream.getvalue())


def test_stdlib_stack_info(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    logging.getLogger("lib").warning("where am I", stack_info=True)
    (entry,) = json_lines(stream)
    assert "test_stdlib_stack_info" in entry["stack"]


# --- redaction -------------------------------------------------------------------------------


def test_pem_block_in_event_and_values_is_removed(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info(f"loaded {PEM} ok", details={"blob": [f"x{PEM}y"]})
    (entry,) = json_lines(stream)
    assert entry["event"] == f"loaded {REDACTED_PRIVATE_KEY}\n ok"
    assert entry["details"]["blob"] == [f"x{REDACTED_PRIVATE_KEY}\ny"]
    assert_no_key_material(stream.getvalue())


@pytest.mark.parametrize(
    "text",
    [
        PEM,
        PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
        PEM.replace("PRIVATE KEY", "EC PRIVATE KEY"),
        PEM.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
        PEM.replace("\n", "\r\n"),
        repr(PEM),  # as it appears inside a formatted exception or a repr
        PEM.split("-----END")[0],  # unterminated
        repr(PEM)[:80] + "..." + repr(PEM)[-60:],  # truncated in the middle
        repr(PEM)[-90:],  # only the tail survived
    ],
)
def test_redact_text_pem_variants(text: str) -> None:
    redacted = redact_text(f"before {text} after")
    assert REDACTED_PRIVATE_KEY in redacted
    assert redacted.startswith("before ")
    for line in PEM_BODY:
        assert line[:12] not in redacted
        assert line[-12:] not in redacted


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "quote q-1 on KXBTC at 0.53, BEGIN of day; PUBLIC KEY -----BEGIN PUBLIC KEY-----"
    assert redact_text(text) == text


def test_secret_named_keys_are_redacted(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info(
        "request",
        key_id="plain-value-1",
        headers={
            "KALSHI-ACCESS-KEY": "plain-value-2",
            "KALSHI-ACCESS-SIGNATURE": "plain-value-3",
            "KALSHI-ACCESS-TIMESTAMP": "1700000000000",
            "Authorization": "Bearer plain-value-4",
        },
        attempts=[{"password": "plain-value-5", "n": 1}],
        client_secret="plain-value-6",
        privateKey="plain-value-7",
        passphrase=None,
        market="KXBTC",
    )
    (entry,) = json_lines(stream)
    assert entry["key_id"] == REDACTED
    assert entry["headers"]["KALSHI-ACCESS-KEY"] == REDACTED
    assert entry["headers"]["KALSHI-ACCESS-SIGNATURE"] == REDACTED
    assert entry["headers"]["KALSHI-ACCESS-TIMESTAMP"] == "1700000000000"
    assert entry["headers"]["Authorization"] == REDACTED
    assert entry["attempts"] == [{"password": REDACTED, "n": 1}]
    assert entry["client_secret"] == REDACTED
    assert entry["privateKey"] == REDACTED
    assert entry["passphrase"] is None
    assert entry["market"] == "KXBTC"
    assert "plain-value" not in stream.getvalue()


def test_secretstr_values_are_redacted(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info("cfg", token_value=SecretStr("very-secret-token"))
    (entry,) = json_lines(stream)
    assert entry["token_value"] == REDACTED


def test_dataclass_fields_are_redacted_by_name() -> None:
    @dataclass
    class Creds:
        key_id: str
        host: str

    out = redact_event(None, "info", {"event": "x", "creds": Creds("plain-value-8", "h")})
    assert out["creds"] == {"key_id": REDACTED, "host": "h"}


def test_registered_secret_is_replaced_everywhere(stream: io.StringIO) -> None:
    register_secret(KEY_ID)
    configure_logging("INFO", "json", stream)
    get_logger("mmbot.test").info(
        f"using {KEY_ID}", note=f"id={KEY_ID}", nested={"list": [KEY_ID, 1]}
    )
    (entry,) = json_lines(stream)
    assert entry["event"] == f"using {REDACTED}"
    assert entry["note"] == f"id={REDACTED}"
    assert entry["nested"] == {"list": [REDACTED, 1]}
    assert_no_key_material(stream.getvalue())


def test_registered_secret_inside_logged_exception(stream: io.StringIO) -> None:
    register_secret(KEY_ID)
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    try:
        raise PermissionError(f"key {KEY_ID} was refused")
    except PermissionError:
        log.exception("auth failed")
    (entry,) = json_lines(stream)
    assert entry["level"] == "error"
    assert "Traceback (most recent call last)" in entry["exception"]
    assert f"PermissionError: key {REDACTED} was refused" in entry["exception"]
    assert_no_key_material(stream.getvalue())


def test_registered_pem_lines_are_replaced_even_without_markers(stream: io.StringIO) -> None:
    register_pem(PEM)
    configure_logging("INFO", "json", stream)
    log = get_logger("mmbot.test")
    log.info("fragment", a=PEM_BODY[1], b="".join(PEM_BODY))
    (entry,) = json_lines(stream)
    assert entry["a"] == REDACTED
    assert PEM_BODY[0] not in entry["b"]
    assert_no_key_material(stream.getvalue())


def test_register_pem_accepts_bytes() -> None:
    register_pem(PEM.encode())
    assert redact_text(PEM_BODY[2]) == REDACTED


def test_short_secrets_are_ignored() -> None:
    register_secret("abc")
    register_secret("       ")
    assert redact_text("abc abc") == "abc abc"


def test_clear_registered_secrets() -> None:
    register_secret(KEY_ID)
    assert redact_text(KEY_ID) == REDACTED
    clear_registered_secrets()
    assert redact_text(KEY_ID) == KEY_ID


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's raw message."""
        self.messages.append(str(record.msg))


def test_other_root_handlers_only_see_redacted_structlog_events(stream: io.StringIO) -> None:
    register_secret(KEY_ID)
    configure_logging("INFO", "json", stream)
    collector = _Collector()
    logging.getLogger().addHandler(collector)
    try:
        get_logger("mmbot.test").info(f"id {KEY_ID}", private_key=PEM, blob=PEM)
    finally:
        logging.getLogger().removeHandler(collector)
    assert len(collector.messages) == 1
    assert_no_key_material(collector.messages[0])
    assert_no_key_material(stream.getvalue())
