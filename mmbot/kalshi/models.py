"""Wire models for Kalshi's REST bodies and ``communications`` WebSocket messages.

Prices and sizes are exact :class:`~decimal.Decimal` values parsed from the
fixed-point strings (``*_dollars``, ``*_fp``). When a payload only carries the
legacy integer field (cents for prices, centi-cents for RFQ target costs, whole
contracts for counts), the model derives the fixed-point value from it. A float
is refused everywhere a price or size is expected: it cannot represent most
prices exactly, and the exchange never sends one.

Field names follow the wire so every attribute can be looked up in Kalshi's docs.
Unknown fields are ignored; an unknown WebSocket message type parses to an
:class:`UnknownMessage` value rather than raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainValidator,
    ValidationError,
    model_validator,
)

__all__ = [
    "Balance",
    "Count",
    "Dollars",
    "ErrorReply",
    "EventPosition",
    "ExchangeStatus",
    "Fill",
    "MakerFill",
    "MalformedMessage",
    "Market",
    "MarketPosition",
    "Message",
    "MveLeg",
    "Ok",
    "Orderbook",
    "PriceRange",
    "Quote",
    "QuoteAccepted",
    "QuoteAcceptedMsg",
    "QuoteCreated",
    "QuoteCreatedMsg",
    "QuoteExecuted",
    "QuoteExecutedMsg",
    "Rfq",
    "RfqCreated",
    "RfqDeleted",
    "Side",
    "Subscribed",
    "UnknownMessage",
    "Unsubscribed",
    "accepted_bid",
    "accepted_msg_from_rest",
    "load_frame",
    "maker_fill_for_accept",
    "message_from_json",
    "parse_fixed_point",
    "parse_message",
]

Side = Literal["yes", "no"]
_T = TypeVar("_T")


def parse_fixed_point(value: object) -> Decimal:
    """Parse a fixed-point string (or int, or Decimal) into a finite Decimal; refuse floats."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a fixed-point number: {value[:32]!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        result = Decimal(value)
    else:
        raise ValueError(f"expected a fixed-point string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    # No real price, size or balance reaches 10^15; a larger figure is corrupt input, and
    # letting it in would overflow the Decimal arithmetic of every risk check after it.
    if result and result.adjusted() >= _MAX_DIGITS:
        raise ValueError(f"beyond any real amount: {str(value)[:32]!r}")
    return result


_MAX_DIGITS = 15


def _utc(value: datetime) -> datetime:
    # Kalshi stamps times in UTC ("...Z"); one without a zone is read as UTC rather than
    # left naive, where comparing it with an aware time would raise.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


#: A timestamp, always timezone-aware.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

#: Money in dollars, from a ``*_dollars`` fixed-point string.
Dollars = Annotated[Decimal, PlainValidator(parse_fixed_point)]
#: A contract count, from a ``*_fp`` fixed-point string.
Count = Annotated[Decimal, PlainValidator(parse_fixed_point)]

# Legacy integer units, as powers of ten below the fixed-point unit.
_WHOLE = 0  # contracts
_CENTS = 2  # prices, balances
_CENTI_CENTS = 4  # RFQ target costs ("target_cost": 3500 is $0.35)


class KalshiModel(BaseModel):
    """Base of every wire model: immutable, tolerant of unknown fields, legacy-aware."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # (fixed-point field, legacy integer field, power of ten the legacy unit sits below).
    _LEGACY: ClassVar[tuple[tuple[str, str, int], ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _fill_from_legacy(cls, data: Any) -> Any:
        if not cls._LEGACY or not isinstance(data, dict):
            return data
        patched: dict[str, Any] | None = None
        for fp_name, legacy_name, scale in cls._LEGACY:
            if data.get(fp_name) is not None:
                continue
            legacy = data.get(legacy_name)
            if legacy is None:
                continue
            if isinstance(legacy, bool) or not isinstance(legacy, int):
                raise ValueError(f"{legacy_name}: legacy integer field must be an integer")
            if patched is None:
                patched = dict(data)
            patched[fp_name] = Decimal(legacy).scaleb(-scale)
        return data if patched is None else patched


# --------------------------------------------------------------------------- RFQs and quotes


class MveLeg(KalshiModel):
    """One selected leg of a combo (multivariate event) market."""

    event_ticker: str | None = None
    market_ticker: str | None = None
    side: str | None = None
    yes_settlement_value_dollars: Dollars | None = None


class Rfq(KalshiModel):
    """An RFQ, from REST (``RFQ``) or the ``msg`` of ``rfq_created`` / ``rfq_deleted``."""

    _LEGACY = (
        ("contracts_fp", "contracts", _WHOLE),
        ("target_cost_dollars", "target_cost", _CENTI_CENTS),
    )

    id: str
    creator_id: str = ""
    market_ticker: str
    event_ticker: str | None = None
    contracts_fp: Count | None = None
    target_cost_dollars: Dollars | None = None
    status: str | None = None
    created_ts: UtcDatetime | None = None
    updated_ts: UtcDatetime | None = None
    cancelled_ts: UtcDatetime | None = None
    deleted_ts: UtcDatetime | None = None
    rest_remainder: bool | None = None
    mve_collection_ticker: str | None = None
    mve_selected_legs: tuple[MveLeg, ...] = ()
    cancellation_reason: str | None = None
    creator_user_id: str | None = None
    creator_subaccount: int | None = None

    @property
    def is_combo(self) -> bool:
        """True for combo (MVE) RFQs, which Kalshi always treats as High Volatility Markets."""
        return bool(self.mve_collection_ticker or self.mve_selected_legs)


class Quote(KalshiModel):
    """A quote as returned by the REST ``Quote`` schema."""

    _LEGACY = (
        ("yes_bid_dollars", "yes_bid", _CENTS),
        ("no_bid_dollars", "no_bid", _CENTS),
        ("contracts_fp", "contracts", _WHOLE),
        ("rfq_target_cost_dollars", "rfq_target_cost", _CENTI_CENTS),
        ("yes_contracts_fp", "yes_contracts", _WHOLE),
        ("no_contracts_fp", "no_contracts", _WHOLE),
    )

    OPEN: ClassVar[str] = "open"
    ACCEPTED: ClassVar[str] = "accepted"
    CONFIRMED: ClassVar[str] = "confirmed"
    EXECUTED: ClassVar[str] = "executed"
    CANCELLED: ClassVar[str] = "cancelled"

    id: str
    rfq_id: str
    creator_id: str = ""
    rfq_creator_id: str = ""
    market_ticker: str
    contracts_fp: Count | None = None
    yes_bid_dollars: Dollars
    no_bid_dollars: Dollars
    # A status string rather than an enum: a status added by the exchange must not make
    # every quote unreadable.
    status: str
    created_ts: UtcDatetime | None = None
    updated_ts: UtcDatetime | None = None
    accepted_side: Side | None = None
    accepted_ts: UtcDatetime | None = None
    confirmed_ts: UtcDatetime | None = None
    executed_ts: UtcDatetime | None = None
    cancelled_ts: UtcDatetime | None = None
    rest_remainder: bool | None = None
    post_only: bool | None = None
    cancellation_reason: str | None = None
    creator_user_id: str | None = None
    rfq_creator_user_id: str | None = None
    rfq_target_cost_dollars: Dollars | None = None
    rfq_creator_order_id: str | None = None
    creator_order_id: str | None = None
    creator_subaccount: int | None = None
    rfq_creator_subaccount: int | None = None
    yes_contracts_fp: Count | None = None
    no_contracts_fp: Count | None = None


class _QuoteEventMsg(KalshiModel):
    """Fields shared by the ``quote_created`` and ``quote_accepted`` payloads."""

    _LEGACY = (
        ("yes_bid_dollars", "yes_bid", _CENTS),
        ("no_bid_dollars", "no_bid", _CENTS),
        ("yes_contracts_offered_fp", "yes_contracts_offered", _WHOLE),
        ("no_contracts_offered_fp", "no_contracts_offered", _WHOLE),
        ("rfq_target_cost_dollars", "rfq_target_cost", _CENTI_CENTS),
        ("contracts_accepted_fp", "contracts_accepted", _WHOLE),
    )

    quote_id: str
    rfq_id: str
    quote_creator_id: str
    rfq_creator_id: str | None = None
    market_ticker: str
    event_ticker: str | None = None
    yes_bid_dollars: Dollars
    no_bid_dollars: Dollars
    yes_contracts_offered_fp: Count | None = None
    no_contracts_offered_fp: Count | None = None
    rfq_target_cost_dollars: Dollars | None = None
    subaccount: int | None = None


class QuoteCreatedMsg(_QuoteEventMsg):
    """Payload of ``quote_created``."""

    created_ts: UtcDatetime | None = None


class QuoteAcceptedMsg(_QuoteEventMsg):
    """Payload of ``quote_accepted``."""

    accepted_side: Side | None = None
    contracts_accepted_fp: Count | None = None


class QuoteExecutedMsg(KalshiModel):
    """Payload of ``quote_executed``: the orders the execution placed, for fill matching."""

    quote_id: str
    rfq_id: str
    quote_creator_id: str
    rfq_creator_id: str | None = None
    order_id: str
    client_order_id: str | None = None
    market_ticker: str
    executed_ts: UtcDatetime | None = None
    subaccount: int | None = None


@dataclass(frozen=True, slots=True)
class MakerFill:
    """What the maker buys when a requester accepts one side of its quote."""

    side: Side
    price: Decimal
    contracts: Decimal

    @property
    def max_loss(self) -> Decimal:
        """Worst-case loss: the whole premium paid, since the contract can expire worthless."""
        return self.price * self.contracts


def accepted_bid(side: Side, yes_bid: _T, no_bid: _T) -> _T:
    """What a requester's acceptance of ``side`` takes: the maker's bid (or size) on it.

    This is the one place the side convention lives. Kalshi's FIX spec says a
    requester accepting with SELL takes the maker's YES quote (reported as
    ``AcceptedSide=Yes``) and BUY takes the NO quote. So ``accepted_side="yes"``
    means the maker's ``yes_bid`` was hit: the maker buys YES at ``yes_bid``;
    ``"no"`` means the maker buys NO at ``no_bid``.
    """
    return yes_bid if side == "yes" else no_bid


def maker_fill_for_accept(msg: QuoteAcceptedMsg) -> MakerFill:
    """Map an acceptance frame, as it stands, to the maker's side, price and size.

    The daemon confirms from its own record instead (see :mod:`mmbot.quoting`); this reads
    a frame alone, for tools and checks that have nothing else.
    """
    if msg.accepted_side is None:
        raise ValueError(f"quote {msg.quote_id}: acceptance without accepted_side")
    side = msg.accepted_side
    price = accepted_bid(side, msg.yes_bid_dollars, msg.no_bid_dollars)
    offered = accepted_bid(side, msg.yes_contracts_offered_fp, msg.no_contracts_offered_fp)
    contracts = msg.contracts_accepted_fp if msg.contracts_accepted_fp is not None else offered
    if contracts is None:
        raise ValueError(f"quote {msg.quote_id}: acceptance without a contract count")
    if not 0 < price <= 1:
        raise ValueError(f"quote {msg.quote_id}: accepted price {price} is outside (0, 1]")
    if contracts <= 0:
        raise ValueError(f"quote {msg.quote_id}: accepted size {contracts} is not positive")
    return MakerFill(side=side, price=price, contracts=contracts)


# --------------------------------------------------------------------------- markets


class PriceRange(KalshiModel):
    """One band of a market's price grid: prices from ``start`` to ``end`` every ``step``."""

    start: Dollars
    end: Dollars
    step: Dollars


class Market(KalshiModel):
    """A market from ``GET /markets`` or ``GET /markets/{ticker}``."""

    _LEGACY = (
        ("yes_bid_dollars", "yes_bid", _CENTS),
        ("yes_ask_dollars", "yes_ask", _CENTS),
        ("no_bid_dollars", "no_bid", _CENTS),
        ("no_ask_dollars", "no_ask", _CENTS),
        ("last_price_dollars", "last_price", _CENTS),
        ("volume_fp", "volume", _WHOLE),
        ("volume_24h_fp", "volume_24h", _WHOLE),
        ("open_interest_fp", "open_interest", _WHOLE),
    )

    ticker: str
    event_ticker: str | None = None
    market_type: str | None = None
    title: str | None = None
    yes_sub_title: str | None = None
    no_sub_title: str | None = None
    status: str | None = None
    open_time: UtcDatetime | None = None
    close_time: UtcDatetime | None = None
    updated_time: UtcDatetime | None = None
    expected_expiration_time: UtcDatetime | None = None
    latest_expiration_time: UtcDatetime | None = None
    yes_bid_dollars: Dollars | None = None
    yes_ask_dollars: Dollars | None = None
    no_bid_dollars: Dollars | None = None
    no_ask_dollars: Dollars | None = None
    yes_bid_size_fp: Count | None = None
    yes_ask_size_fp: Count | None = None
    last_price_dollars: Dollars | None = None
    volume_fp: Count | None = None
    volume_24h_fp: Count | None = None
    open_interest_fp: Count | None = None
    notional_value_dollars: Dollars | None = None
    result: str | None = None
    # What a YES contract paid once the market is determined; absent before that.
    settlement_value_dollars: Dollars | None = None
    settlement_ts: UtcDatetime | None = None
    can_close_early: bool | None = None
    price_level_structure: str | None = None
    price_ranges: tuple[PriceRange, ...] = ()
    mve_collection_ticker: str | None = None
    mve_selected_legs: tuple[MveLeg, ...] = ()

    def is_on_grid(self, price: Decimal) -> bool:
        """True when ``price`` is a valid quote price on this market's grid."""
        for band in self.price_ranges:
            on_band = band.start <= price <= band.end and band.step > 0
            if on_band and (price - band.start) % band.step == 0:
                return True
        return False


class PriceLevel(KalshiModel):
    """One level of an order book side: a price and the contracts resting there."""

    price: Dollars
    count: Count


class Orderbook(KalshiModel):
    """Resting YES and NO bids of a market, best price last as the exchange sends them."""

    yes: tuple[PriceLevel, ...] = ()
    no: tuple[PriceLevel, ...] = ()

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Orderbook:
        """Build from a ``GET /markets/{ticker}/orderbook`` body (fixed-point or legacy)."""
        book = body.get("orderbook_fp")
        if isinstance(book, dict):
            yes = book.get("yes_dollars") or []
            no = book.get("no_dollars") or []
            scale = 0
        else:
            legacy = body.get("orderbook") or {}
            yes, no, scale = legacy.get("yes") or [], legacy.get("no") or [], _CENTS

        def levels(rows: list[Any]) -> list[dict[str, Any]]:
            out = []
            for row in rows:
                if not isinstance(row, list | tuple) or len(row) < 2:
                    raise ValueError(f"orderbook level must be [price, count], got {row!r}")
                price = row[0]
                if scale:
                    if isinstance(price, bool) or not isinstance(price, int):
                        raise ValueError("legacy orderbook prices must be integer cents")
                    price = Decimal(price).scaleb(-scale)
                out.append({"price": price, "count": row[1]})
            return out

        return cls.model_validate({"yes": levels(yes), "no": levels(no)})


# --------------------------------------------------------------------------- portfolio


class MarketPosition(KalshiModel):
    """A position in one market; ``position_fp`` > 0 is YES contracts, < 0 is NO."""

    _LEGACY = (
        ("position_fp", "position", _WHOLE),
        ("market_exposure_dollars", "market_exposure", _CENTS),
        ("realized_pnl_dollars", "realized_pnl", _CENTS),
        ("fees_paid_dollars", "fees_paid", _CENTS),
        ("total_traded_dollars", "total_traded", _CENTS),
    )

    ticker: str
    position_fp: Count
    market_exposure_dollars: Dollars | None = None
    realized_pnl_dollars: Dollars | None = None
    fees_paid_dollars: Dollars | None = None
    total_traded_dollars: Dollars | None = None
    last_updated_ts: UtcDatetime | None = None
    exchange_index: int | None = None


class EventPosition(KalshiModel):
    """Aggregate position over one event."""

    _LEGACY = (
        ("total_cost_dollars", "total_cost", _CENTS),
        ("event_exposure_dollars", "event_exposure", _CENTS),
        ("realized_pnl_dollars", "realized_pnl", _CENTS),
        ("fees_paid_dollars", "fees_paid", _CENTS),
    )

    event_ticker: str
    total_cost_dollars: Dollars | None = None
    total_cost_shares_fp: Count | None = None
    event_exposure_dollars: Dollars | None = None
    realized_pnl_dollars: Dollars | None = None
    fees_paid_dollars: Dollars | None = None


class Fill(KalshiModel):
    """One fill from ``GET /portfolio/fills``."""

    _LEGACY = (
        ("count_fp", "count", _WHOLE),
        ("yes_price_dollars", "yes_price", _CENTS),
        ("no_price_dollars", "no_price", _CENTS),
    )

    fill_id: str | None = None
    trade_id: str | None = None
    order_id: str
    ticker: str | None = None
    market_ticker: str | None = None
    outcome_side: Side | None = None
    book_side: Literal["bid", "ask"] | None = None
    side: Side | None = None
    action: Literal["buy", "sell"] | None = None
    count_fp: Count
    yes_price_dollars: Dollars
    no_price_dollars: Dollars
    is_taker: bool | None = None
    fee_cost: Dollars | None = None
    created_time: UtcDatetime | None = None
    ts: int | None = None
    exchange_index: int | None = None
    subaccount_number: int | None = None

    @property
    def market(self) -> str:
        """The market ticker, whichever of the two equivalent fields carried it."""
        return self.ticker or self.market_ticker or ""


class Balance(KalshiModel):
    """Available balance and portfolio value, in dollars."""

    _LEGACY = (
        ("balance_dollars", "balance", _CENTS),
        ("portfolio_value_dollars", "portfolio_value", _CENTS),
    )

    balance_dollars: Dollars
    portfolio_value_dollars: Dollars | None = None
    updated_ts: int | None = None


class ExchangeStatus(KalshiModel):
    """Whether the exchange is up and trading."""

    exchange_active: bool
    trading_active: bool
    exchange_estimated_resume_time: UtcDatetime | None = None


# --------------------------------------------------------------------------- WebSocket messages


class RfqCreated(KalshiModel):
    """``rfq_created``: a new RFQ was broadcast (to every subscriber)."""

    type: Literal["rfq_created"]
    sid: int | None = None
    msg: Rfq


class RfqDeleted(KalshiModel):
    """``rfq_deleted``: an RFQ was withdrawn, expired or filled (to every subscriber)."""

    type: Literal["rfq_deleted"]
    sid: int | None = None
    msg: Rfq


class QuoteCreated(KalshiModel):
    """``quote_created``: a quote was placed on an RFQ (to its requester and maker)."""

    type: Literal["quote_created"]
    sid: int | None = None
    msg: QuoteCreatedMsg


class QuoteAccepted(KalshiModel):
    """``quote_accepted``: the requester accepted one side; the maker must confirm in time."""

    type: Literal["quote_accepted"]
    sid: int | None = None
    msg: QuoteAcceptedMsg


class QuoteExecuted(KalshiModel):
    """``quote_executed``: a confirmed quote executed and placed orders."""

    type: Literal["quote_executed"]
    sid: int | None = None
    msg: QuoteExecutedMsg


class SubscribedMsg(KalshiModel):
    """Body of a ``subscribed`` reply."""

    channel: str
    sid: int


class Subscribed(KalshiModel):
    """Reply to ``subscribe``: the channel and its server-assigned subscription id."""

    type: Literal["subscribed"]
    id: int | None = None
    msg: SubscribedMsg


class Unsubscribed(KalshiModel):
    """Reply to ``unsubscribe``."""

    type: Literal["unsubscribed"]
    id: int | None = None
    sid: int | None = None
    seq: int | None = None


class Ok(KalshiModel):
    """Generic success reply (``update_subscription``, ``list_subscriptions``)."""

    type: Literal["ok"]
    id: int | None = None
    sid: int | None = None
    seq: int | None = None
    msg: Any = None


class ErrorMsg(KalshiModel):
    """Body of an ``error`` reply: a numeric code (1-28 in the docs) and a text."""

    code: int
    msg: str = ""
    market_ticker: str | None = None
    market_id: str | None = None


class ErrorReply(KalshiModel):
    """A command failed; ``id`` names the command when the server knows it."""

    type: Literal["error"]
    id: int | None = None
    msg: ErrorMsg


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A well-formed message of a type this version does not know; kept, not raised."""

    type: str
    raw: dict[str, Any]


Message = (
    RfqCreated
    | RfqDeleted
    | QuoteCreated
    | QuoteAccepted
    | QuoteExecuted
    | Subscribed
    | Unsubscribed
    | Ok
    | ErrorReply
    | UnknownMessage
)

_MESSAGE_TYPES: dict[str, type[KalshiModel]] = {
    "rfq_created": RfqCreated,
    "rfq_deleted": RfqDeleted,
    "quote_created": QuoteCreated,
    "quote_accepted": QuoteAccepted,
    "quote_executed": QuoteExecuted,
    "subscribed": Subscribed,
    "unsubscribed": Unsubscribed,
    "ok": Ok,
    "error": ErrorReply,
}

_EXCERPT_CHARS = 160


class MalformedMessage(ValueError):
    """A frame that is not JSON, not an object with a ``type``, or fails its type's schema."""

    def __init__(self, reason: str, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        self.reason = reason
        self.excerpt = text[:_EXCERPT_CHARS] + ("..." if len(text) > _EXCERPT_CHARS else "")
        super().__init__(f"{reason}: {self.excerpt}")


def _summarize(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        loc = ".".join(str(p) for p in item["loc"]) or "<root>"
        parts.append(f"{loc}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_message(frame: str | bytes) -> Message:
    """Parse one WebSocket text frame into a typed message, or raise :class:`MalformedMessage`."""
    return message_from_json(load_frame(frame), frame)


def load_frame(frame: str | bytes) -> Any:
    """Decode one frame's JSON, or raise :class:`MalformedMessage`; the first half of parsing.

    Split from :func:`message_from_json` so that a reader can look at the envelope (its
    ``sending_ts_ms``) without decoding the frame twice.
    """
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise MalformedMessage("invalid JSON", frame) from None


def message_from_json(data: Any, frame: str | bytes) -> Message:
    """Type the decoded ``data`` of ``frame``, or raise :class:`MalformedMessage`."""
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object", frame)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise MalformedMessage("missing message type", frame)
    model = _MESSAGE_TYPES.get(kind)
    if model is None:
        return UnknownMessage(type=kind, raw=data)
    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise MalformedMessage(f"invalid {kind}: {_summarize(exc)}", frame) from None


def accepted_msg_from_rest(quote: Quote) -> QuoteAcceptedMsg:
    """An acceptance found over REST, in the shape the WebSocket would have delivered it."""
    # The REST quote does not say how much was accepted; a size of zero (a budget-sized
    # RFQ) is none at all, which our record then reads as the size we offered.
    size = quote.contracts_fp if quote.contracts_fp is not None and quote.contracts_fp > 0 else None
    return QuoteAcceptedMsg(
        quote_id=quote.id,
        rfq_id=quote.rfq_id,
        quote_creator_id=quote.creator_id,
        rfq_creator_id=quote.rfq_creator_id,
        market_ticker=quote.market_ticker,
        yes_bid_dollars=quote.yes_bid_dollars,
        no_bid_dollars=quote.no_bid_dollars,
        yes_contracts_offered_fp=quote.yes_contracts_fp,
        no_contracts_offered_fp=quote.no_contracts_fp,
        accepted_side=quote.accepted_side,
        contracts_accepted_fp=size,
    )
