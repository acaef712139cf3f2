"""The benchmark: statistics, the mock's timing probe and write bucket, and a tiny full run."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ed25519

from mmbot.bench.harness import BenchOptions, format_table, run_bench
from mmbot.bench.lean import LeanQuoter
from mmbot.bench.metrics import histogram_quantile, market_data_figures
from mmbot.bench.procs import cpu_seconds, rss_bytes
from mmbot.bench.stats import cdf_points, percentile, ratio, summarize_ns
from mmbot.kalshi.auth import KalshiAuth, Signer
from mmbot.mock.server import BenchProbe, MockConfig, MockExchange, TokenBucket, write_cost

# A tiny full benchmark run and live sockets: seconds, not milliseconds.
pytestmark = pytest.mark.slow

# --------------------------------------------------------------------------- statistics


def test_percentile_is_nearest_rank_on_known_data() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    # Nearest rank: p50 of four values is the second, never an interpolated 2.5.
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 99) == 4
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1], 0)


def test_summarize_ns_reports_milliseconds_and_handles_empty() -> None:
    samples = [i * 1_000_000 for i in range(100, 0, -1)]  # 1..100 ms, unsorted
    summary = summarize_ns(samples)
    assert summary == {
        "count": 100,
        "p50_ms": 50.0,
        "p90_ms": 90.0,
        "p99_ms": 99.0,
        "max_ms": 100.0,
    }
    assert summarize_ns([]) == {
        "count": 0,
        "p50_ms": None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }


def test_ratio_and_cdf_points() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0) is None
    xs, ys = cdf_points([3_000_000, 1_000_000, 2_000_000])
    assert xs == [1.0, 2.0, 3.0]
    assert ys == pytest.approx([1 / 3, 2 / 3, 1.0])
    xs, ys = cdf_points(list(range(10_000)), max_points=100)
    assert len(xs) <= 101
    assert ys[-1] == 1.0
    assert xs == sorted(xs)
    assert cdf_points([]) == ([], [])


def test_proc_figures_of_this_process() -> None:
    import os

    assert cpu_seconds(os.getpid()) > 0
    memory = rss_bytes(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 1_000_000


# --------------------------------------------------------------------------- mock pieces


def test_probe_pairs_first_quote_and_confirm_with_their_frames() -> None:
    probe = BenchProbe()
    probe.frame_sent("rfq_created", "r1")
    probe.frame_sent("rfq_created", "r1")  # a duplicate frame keeps the first stamp
    probe.frame_sent("quote_accepted", "q1")
    probe.quote_received("r1", 10**18)
    probe.quote_received("r1", 10**18)  # a requote is not a first quote
    probe.quote_received("unknown", 10**18)
    probe.confirm_received("q1", 10**18)
    snap = probe.snapshot()
    assert snap["rfq_frames"] == 2
    assert snap["quotes_matched"] == 1
    assert snap["confirms_matched"] == 1
    assert len(snap["rfq_to_quote_ns"]) == 1
    assert len(snap["accept_to_confirm_ns"]) == 1
    assert snap["rfq_to_quote_ns"][0] > 0
    probe.reset()
    assert probe.snapshot()["rfq_to_quote_ns"] == []


def test_token_bucket_and_kalshi_costs() -> None:
    bucket = TokenBucket(rate=10, capacity=4)
    bucket.stamp = 0.0
    assert bucket.take(2, now=0.0)
    assert bucket.take(2, now=0.0)
    assert not bucket.take(2, now=0.0)  # empty: nothing spent
    assert bucket.take(2, now=0.2)  # 0.2 s x 10 tokens/s refilled
    assert write_cost("POST", "/trade-api/v2/communications/quotes") == 2
    assert write_cost("DELETE", "/trade-api/v2/communications/quotes/q") == 2
    assert write_cost("DELETE", "/trade-api/v2/communications/rfqs/r/quotes/q") == 2
    assert write_cost("PUT", "/trade-api/v2/communications/quotes/q/confirm") == 10
    assert write_cost("POST", "/trade-api/v2/communications/rfqs") == 10


async def test_bench_source_timing_and_rate_limit_over_sockets() -> None:
    """A tiny maker quotes every RFQ; the probe times it and the bucket answers 429s."""
    key = ed25519.Ed25519PrivateKey.generate()
    signer = Signer("maker", key)
    async with MockExchange(MockConfig(markets=10, hvm_fraction=0, time_scale=0.1)) as mock:
        mock.register_key("maker", key.public_key())
        async with httpx.AsyncClient(timeout=5, headers=mock.control_headers) as control:
            base = mock.base_url + "/_mock"
            # 4 tokens/s, bucket of 4: two quotes at once, then one every half second.
            r = await control.post(
                base + "/rate_limit",
                json={"write_tokens_per_second": 4, "write_bucket_capacity": 4},
            )
            assert r.json()["write_bucket_capacity"] == 4
            statuses: list[int] = []
            async with (
                httpx.AsyncClient(auth=KalshiAuth(signer), timeout=5) as client,
                websockets.connect(
                    mock.ws_url, additional_headers=signer.headers("GET", mock.ws_url)
                ) as ws,
            ):
                await ws.send(
                    json.dumps(
                        {"id": 1, "cmd": "subscribe", "params": {"channels": ["communications"]}}
                    )
                )
                assert json.loads(await ws.recv())["type"] == "subscribed"
                r = await control.post(
                    base + "/bench/start", json={"rate": 20, "accept_fraction": 1}
                )
                assert r.status_code == 200, r.text
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 1.5
                while loop.time() < deadline:
                    try:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    if frame["type"] == "rfq_created":
                        resp = await client.post(
                            mock.rest_url + "/communications/quotes",
                            json={
                                "rfq_id": frame["msg"]["id"],
                                "yes_bid": "0.01",
                                "no_bid": "0.01",
                                "rest_remainder": False,
                            },
                        )
                        statuses.append(resp.status_code)
                state = (await control.get(base + "/bench")).json()
                await control.post(base + "/bench/stop")
    assert 201 in statuses
    assert 429 in statuses
    assert state["rate_limit"]["rate_limited_by_user"]["maker"] == statuses.count(429)
    assert state["source"]["rfqs_created"] >= 20
    assert state["quotes_matched"] == statuses.count(201)
    assert all(0 < ns < 1_000_000_000 for ns in state["rfq_to_quote_ns"])


# --------------------------------------------------------------------------- the harness


def test_tiny_run_prints_the_table_and_writes_every_field(tmp_path: Path) -> None:
    options = BenchOptions(
        low_rate=20,
        high_rate=60,
        warmup_seconds=1.0,
        measure_seconds=2.0,
        budget_tokens_per_second=40,
        budget_capacity=40,
        markets=10,
        accept_fraction=0.5,
        baseline_high=False,
        lean_high=False,
        soak=False,
        quick=True,
        json_out=tmp_path / "bench.json",
        plot=tmp_path / "bench.png",
        log_dir=tmp_path / "logs",
    )
    out = io.StringIO()
    run_bench(options, out=out)
    table = out.getvalue()
    assert "RFQ-to-quote p99 (ms)" in table
    assert "targets:" in table
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["phases"]) == {"daemon_low", "baseline_low", "lean_low", "daemon_high"}
    for name, phase in report["phases"].items():
        for field in (
            "rfq_to_quote",
            "accept_to_confirm",
            "cpu_seconds_per_1000_rfqs",
            "peak_rss_mb",
            "http_429",
            "shed",
            "achieved_rate",
        ):
            assert field in phase, (name, field)
        assert phase["rfqs"] > 0, name
        assert phase["rfq_to_quote"]["count"] > 0, name
        summary = phase["rfq_to_quote"]
        assert 0 < summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]
        assert summary["max_ms"] < 5_000
        assert phase["cpu_seconds_per_1000_rfqs"] > 0
        assert 10 < phase["peak_rss_mb"] < 2_000
    assert report["phases"]["daemon_low"]["exit_code"] == 0
    assert report["phases"]["daemon_low"]["http_429"] == 0
    assert "daemon_over_baseline_low" in report["comparisons"]
    # The lean quoter: its own key and bucket, measured like the others, compared with the daemon.
    lean = report["phases"]["lean_low"]
    assert lean["quoter"] == "lean"
    assert lean["http_429"] == 0
    assert lean["client_counts"]["quotes_ok"] > 0
    assert lean["event_loop"] in {"uvloop", "asyncio"}
    assert report["phases"]["baseline_low"]["event_loop"] == "asyncio"
    vs_lean = report["comparisons"]["daemon_over_lean_low"]
    assert vs_lean["rfq_to_quote_p50_ms"] == pytest.approx(
        report["phases"]["daemon_low"]["rfq_to_quote"]["p50_ms"] / lean["rfq_to_quote"]["p50_ms"]
    )
    assert vs_lean["rfq_to_quote_p99_ms"] > 0
    assert "ratio d/l" in table
    assert "daemon/lean RFQ-to-quote (low rate): p50 " in table
    assert "event loops: daemon " in table
    assert {t["verdict"] for t in report["targets"]} <= {"PASS", "FAIL", "n/a"}
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert format_table(report).startswith("metric")


def test_cli_registers_bench() -> None:
    from mmbot import cli

    args = cli.build_parser().parse_args(["bench", "--quick", "--no-soak", "--phases", "soak"])
    assert args.quick
    assert args.no_soak
    assert args.phases == "soak"


def test_cli_lean_and_event_loop_knobs_reach_the_options() -> None:
    from mmbot import cli
    from mmbot.cli.bench import _options

    argv = ["bench", "--quick", "--no-lean-high", "--daemon-event-loop", "uvloop"]
    options = _options(cli.build_parser().parse_args(argv))
    assert isinstance(options, BenchOptions)
    assert not options.lean_high
    assert options.daemon_event_loop == "uvloop"
    assert options.lean_event_loop == "auto"
    names = [spec.name for spec in options.phase_specs()]
    assert names == ["daemon_low", "baseline_low", "lean_low", "daemon_high", "baseline_high"]
    assert [spec.quoter for spec in BenchOptions().phase_specs()][-1] == "lean"


def test_market_data_knobs_reach_the_options_and_the_daemon_config() -> None:
    from mmbot import cli
    from mmbot.cli.bench import _options

    argv = ["bench", "--quick", "--daemon-md-stream", "off", "--daemon-last-look", "on"]
    argv += ["--md-updates-per-second", "200"]
    options = _options(cli.build_parser().parse_args(argv))
    assert isinstance(options, BenchOptions)
    assert (options.daemon_md_stream, options.daemon_last_look) == (False, True)
    assert options.md_updates_per_second == 200
    assert BenchOptions().daemon_md_stream is None  # unset: the key is not written


def _lag(counts: dict[str, float], total: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    buckets = [({"le": le}, value) for le, value in counts.items()]
    return {
        "mmbot_marketdata_update_lag_seconds_bucket": buckets,
        "mmbot_marketdata_stream_messages_total": [({}, total)],
        "mmbot_rest_requests_total": [
            ({"endpoint": "list_markets", "status": "200"}, total / 100),
            ({"endpoint": "create_quote", "status": "201"}, total),
        ],
    }


def test_market_data_figures_read_the_window_s_histogram_like_prometheus() -> None:
    before = _lag({"0.01": 0, "0.02": 0, "0.05": 0, "+Inf": 0}, 0)
    # 100 observations in the window: 50 under 10 ms, 48 in (10, 20] ms, 2 in (20, 50] ms.
    after = _lag({"0.01": 50, "0.02": 98, "0.05": 100, "+Inf": 100}, 1000)
    assert histogram_quantile(before, after, "mmbot_marketdata_update_lag_seconds", 0.5) == 0.01
    p99 = histogram_quantile(before, after, "mmbot_marketdata_update_lag_seconds", 0.99)
    assert p99 == pytest.approx(0.02 + 0.03 * 0.5)
    figures = market_data_figures(before, after, 10.0, 200.0)
    assert figures["lag_p99_ms"] == pytest.approx(35.0)
    assert figures["stream_messages_per_second"] == 100.0
    assert figures["market_reads_per_second"] == 1.0
    assert figures["reads_per_second"] == 1.0  # the quote creations are writes
    assert histogram_quantile(before, before, "mmbot_marketdata_update_lag_seconds", 0.99) is None


async def test_lean_quoter_quotes_and_confirms_over_sockets() -> None:
    """The lean quoter in-process: a signed aiohttp POST per RFQ, a PUT per acceptance."""
    key = ed25519.Ed25519PrivateKey.generate()
    async with MockExchange(MockConfig(markets=10, hvm_fraction=0, time_scale=0.1)) as mock:
        mock.register_key("lean", key.public_key())
        quoter = LeanQuoter(mock.rest_url, mock.ws_url, Signer("lean", key))
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(quoter.run(stop, ready.set))
        await asyncio.wait_for(ready.wait(), 5)
        async with httpx.AsyncClient(timeout=5, headers=mock.control_headers) as control:
            base = mock.base_url + "/_mock"
            # The subscription is acknowledged before the exchange counts the connection.
            for _ in range(100):
                if (await control.get(base + "/state")).json()["ws_connections"] >= 1:
                    break
                await asyncio.sleep(0.01)
            r = await control.post(base + "/bench/start", json={"rate": 20, "accept_fraction": 1})
            assert r.status_code == 200, r.text
            await asyncio.sleep(1.0)
            state = (await control.get(base + "/bench")).json()
            await control.post(base + "/bench/stop")
        stop.set()
        await asyncio.wait_for(task, 5)
    counts = quoter.counts
    assert counts["quotes_ok"] > 0
    assert counts["quotes_failed"] == counts["quotes_429"] == 0
    assert counts["confirms_ok"] > 0
    # The snapshot may miss the answer to a quote still in flight, never count more.
    assert 0 < state["quotes_matched"] <= counts["quotes_ok"]
    assert all(0 < ns < 1_000_000_000 for ns in state["rfq_to_quote_ns"])
