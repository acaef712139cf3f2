"""The metric family names that the operations issue makes a public contract."""

#: Dashboards and alert rules query these; renaming one breaks them.
CONTRACT = (
    "mmbot_rfqs_received_total",
    "mmbot_quotes_created_total",
    "mmbot_quotes_deleted_total",
    "mmbot_quotes_confirmed_total",
    "mmbot_quotes_declined_total",
    "mmbot_quotes_executed_total",
    "mmbot_open_quotes",
    "mmbot_exposure_dollars",
    "mmbot_realized_pnl_dollars",
    "mmbot_rfq_to_quote_seconds",
    "mmbot_confirm_latency_seconds",
    "mmbot_ws_reconnects_total",
    "mmbot_ws_frames_invalid_total",
    "mmbot_rest_requests_total",
    "mmbot_rate_limited_total",
    "mmbot_build_info",
)
