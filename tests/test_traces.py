"""Tests of specstop_gym.traces: formats, importers, Kaplan-Meier, summaries, fits, manifest, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specstop_gym.traces import (
    AcceptanceTrace,
    DelayTrace,
    ManifestError,
    TraceFormatError,
    data_path,
    data_root,
    detect_regime_changes,
    fit_markov_channel,
    import_csv_columns,
    import_fping,
    import_ping,
    load_acceptance_trace,
    load_delay_trace,
    load_manifest,
    plot_delay_trace,
    summarize_delay_trace,
    verify_manifest,
    write_acceptance_trace,
    write_delay_trace,
)
from specstop_gym.traces.cli import main as cli_main
from specstop_gym.traces.provenance import read_readme_table, readme_rtt_stats
from specstop_gym.traces.summary import _candidate_changes

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_format_error(exc: pytest.ExceptionInfo[TraceFormatError], path: Path, line: int) -> None:
    msg = str(exc.value)
    assert path.name in msg, msg
    assert f"line {line}" in msg, msg
    assert exc.value.line == line


# --------------------------------------------------------------------------- delay traces


def random_delay_trace(rng: np.random.Generator, n: int, with_state: bool) -> DelayTrace:
    t = np.cumsum(rng.uniform(0.0, 40.0, n)).round(3)
    rtt = rng.lognormal(np.log(40.0), 0.4, n)  # full float precision
    state = rng.integers(0, 3, n) if with_state else None
    return DelayTrace(
        t_ms=t,
        rtt_ms=rtt,
        state=state,
        metadata={"source": "unit test", "licence": "MIT", "synthetic": "yes", "note": "a: b"},
    )


@pytest.mark.parametrize("with_state", [False, True])
def test_delay_round_trip(tmp_path: Path, with_state: bool) -> None:
    trace = random_delay_trace(np.random.default_rng(1), 500, with_state)
    path = tmp_path / "trace.csv"
    write_delay_trace(path, trace)
    back = load_delay_trace(path)
    np.testing.assert_array_equal(back.t_ms, trace.t_ms)
    np.testing.assert_array_equal(back.rtt_ms, trace.rtt_ms)
    if with_state:
        assert back.state is not None and back.state.dtype == np.int64
        np.testing.assert_array_equal(back.state, trace.state)
    else:
        assert back.state is None
    assert back.metadata == trace.metadata
    assert back.path == str(path)
    assert not list(tmp_path.glob(".*.tmp")), "the atomic writer left a temporary file"


def test_delay_reader_accepts_reasonable_variants(tmp_path: Path) -> None:
    text = (
        "\ufeff# source: hand written\n# a free comment without a colon\n\n"
        "rtt_ms, t_ms\r\n12.5, 0\r\n\r\n13,1e2\r\n13,100\r\n"
    )
    tr = load_delay_trace(write(tmp_path, "variants.csv", text))
    np.testing.assert_array_equal(tr.t_ms, [0.0, 100.0, 100.0])
    np.testing.assert_array_equal(tr.rtt_ms, [12.5, 13.0, 13.0])
    assert tr.metadata == {"source": "hand written"}
    assert tr.n_rows == 3 and tr.duration_ms == 100.0


def test_delay_trace_is_read_only_and_validated() -> None:
    tr = DelayTrace(t_ms=[0, 1], rtt_ms=[5, 6])
    with pytest.raises(ValueError):
        tr.rtt_ms[0] = 1.0
    with pytest.raises(ValueError, match="non-decreasing"):
        DelayTrace(t_ms=[1, 0], rtt_ms=[5, 6])
    with pytest.raises(ValueError, match="> 0"):
        DelayTrace(t_ms=[0, 1], rtt_ms=[5, 0])
    with pytest.raises(ValueError, match="at least one"):
        DelayTrace(t_ms=[], rtt_ms=[])


DELAY_MALFORMED = {
    "empty": (b"", 1),
    "no_header": ("0,12\n1,13\n", 1),
    "comments_only": ("# source: x\n# licence: y\n", 2),
    "missing_column": ("# source: x\nt_ms,latency\n0,12\n", 2),
    "unknown_column": ("t_ms,rtt_ms,jitter\n0,12,1\n", 1),
    "time_backwards": ("t_ms,rtt_ms\n0,12\n50,13\n40,14\n", 4),
    "negative_rtt": ("t_ms,rtt_ms\n0,12\n50,-3\n", 3),
    "zero_rtt": ("t_ms,rtt_ms\n0,0\n", 2),
    "nan_rtt": ("t_ms,rtt_ms\n0,12\n50,nan\n", 3),
    "inf_time": ("t_ms,rtt_ms\n0,12\ninf,13\n", 3),
    "not_a_number": ("t_ms,rtt_ms\n0,12\n50,12\n100,abc\n", 4),
    "python_literal": ("t_ms,rtt_ms\n0,1_000\n", 2),
    "wrong_field_count": ("t_ms,rtt_ms\n0,12\n50,13,7\n", 3),
    "no_rows": ("# source: x\nt_ms,rtt_ms\n", 2),
    "bad_state": ("t_ms,rtt_ms,state\n0,12,0\n50,13,1.5\n", 3),
    "binary_nul": (b"t_ms,rtt_ms\n0,12\n\x00\x01\x02garbage\n", 3),
    "binary_utf8": (b"t_ms,rtt_ms\n0,12\n50,13\n\xff\xfe\x80\x81\n", 4),
    "duplicate_metadata": ("# source: a\n# source: b\nt_ms,rtt_ms\n0,1\n", 2),
}


@pytest.mark.parametrize("case", sorted(DELAY_MALFORMED))
def test_delay_reader_rejects_malformed(tmp_path: Path, case: str) -> None:
    content, line = DELAY_MALFORMED[case]
    path = write(tmp_path, f"bad_{case}.csv", content)
    with pytest.raises(TraceFormatError) as exc:
        load_delay_trace(path)
    assert_format_error(exc, path, line)


def test_delay_error_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "nr5g.csv", "t_ms,rtt_ms\n0,12\n50,abc\n")
    with pytest.raises(TraceFormatError) as exc:
        load_delay_trace(path)
    assert str(exc.value) == f"{path} line 3, field rtt_ms: 'abc' is not a number"
    assert exc.value.field == "rtt_ms"


# --------------------------------------------------------------------------- acceptance traces


def random_acceptance_trace(rng: np.random.Generator, n: int, optional: bool) -> AcceptanceTrace:
    k = rng.integers(1, 9, n)
    g = np.minimum(rng.geometric(0.4, n) - 1, k)
    kwargs = {}
    if optional:
        q = rng.uniform(0, 1, (n, 8))
        q[np.arange(8)[None, :] >= k[:, None]] = np.nan
        kwargs = {
            "confidences": q,
            "draft_ms": rng.uniform(10, 100, n),
            "verify_ms": rng.uniform(15, 20, n),
        }
    return AcceptanceTrace(
        run_length=g,
        censored=g == k,
        draft_length=k,
        metadata={"model_pair": "a -> b", "hardware": "cpu", "synthetic": "yes", "n": 3},
        **kwargs,
    )


@pytest.mark.parametrize("optional", [False, True])
def test_acceptance_round_trip(tmp_path: Path, optional: bool) -> None:
    trace = random_acceptance_trace(np.random.default_rng(2), 300, optional)
    path = tmp_path / "acc.jsonl"
    write_acceptance_trace(path, trace)
    back = load_acceptance_trace(path)
    for name in ("run_length", "censored", "draft_length"):
        np.testing.assert_array_equal(getattr(back, name), getattr(trace, name))
    assert back.run_length.dtype == np.int64 and back.censored.dtype == np.bool_
    for name in ("confidences", "draft_ms", "verify_ms"):
        if optional:
            np.testing.assert_array_equal(getattr(back, name), getattr(trace, name))
        else:
            assert getattr(back, name) is None
    if optional:
        assert back.confidences is not None and back.confidences.shape == (300, 8)
    assert back.metadata == trace.metadata
    first = json.loads(path.read_text().splitlines()[0])
    assert first["format"] == "specstop-acceptance-v1"


HEADER = '{"format": "specstop-acceptance-v1", "metadata": {"source": "test"}}\n'
ROUND = '{"run_length": 1, "censored": false, "draft_length": 3}\n'
ACCEPTANCE_MALFORMED = {
    "empty": (b"", 1),
    "bad_json": (HEADER + ROUND + '{"run_length": 2, "censored": false,\n', 3),
    "run_exceeds_draft": (
        HEADER + ROUND + '{"run_length": 4, "censored": false, "draft_length": 3}\n',
        3,
    ),
    "missing_header": (ROUND, 1),
    "wrong_format": ('{"format": "other-v9", "metadata": {}}\n' + ROUND, 1),
    "censored_inconsistent": (
        HEADER + '{"run_length": 3, "censored": false, "draft_length": 3}\n',
        2,
    ),
    "missing_field": (HEADER + ROUND + '{"run_length": 1, "draft_length": 3}\n', 3),
    "unknown_field": (
        HEADER + '{"run_length": 1, "censored": false, "draft_length": 3, "eval": "x"}\n',
        2,
    ),
    "bool_as_int": (HEADER + '{"run_length": true, "censored": false, "draft_length": 3}\n', 2),
    "float_length": (HEADER + '{"run_length": 1.0, "censored": false, "draft_length": 3}\n', 2),
    "nan_literal": (
        HEADER + '{"run_length": 1, "censored": false, "draft_length": 2, "draft_ms": NaN}\n',
        2,
    ),
    "confidence_out_of_range": (
        HEADER
        + '{"run_length": 1, "censored": false, "draft_length": 2, "confidences": [0.5, 1.5]}\n',
        2,
    ),
    "confidences_wrong_length": (
        HEADER + '{"run_length": 1, "censored": false, "draft_length": 2, "confidences": [0.5]}\n',
        2,
    ),
    "optional_inconsistent": (
        HEADER
        + '{"run_length": 1, "censored": false, "draft_length": 2, "draft_ms": 3.0}\n'
        + ROUND,
        3,
    ),
    "no_rounds": (HEADER, 1),
    "duplicate_key": (
        HEADER + '{"run_length": 1, "run_length": 2, "censored": false, "draft_length": 3}\n',
        2,
    ),
    "negative_ms": (
        HEADER + '{"run_length": 1, "censored": false, "draft_length": 2, "verify_ms": -1}\n',
        2,
    ),
    "binary": (HEADER.encode() + b"\x80\x00\xff\n", 2),
}


@pytest.mark.parametrize("case", sorted(ACCEPTANCE_MALFORMED))
def test_acceptance_reader_rejects_malformed(tmp_path: Path, case: str) -> None:
    content, line = ACCEPTANCE_MALFORMED[case]
    path = write(tmp_path, f"bad_{case}.jsonl", content)
    with pytest.raises(TraceFormatError) as exc:
        load_acceptance_trace(path)
    assert_format_error(exc, path, line)


def test_acceptance_error_names_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, "acc.jsonl", HEADER + '{"run_length": 5, "censored": false, "draft_length": 3}\n'
    )
    with pytest.raises(TraceFormatError) as exc:
        load_acceptance_trace(path)
    assert exc.value.field == "run_length"
    assert "exceeds draft_length" in str(exc.value)


def test_acceptance_constructor_validates() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        AcceptanceTrace(run_length=[3], censored=[False], draft_length=[2])
    with pytest.raises(ValueError, match="censored"):
        AcceptanceTrace(run_length=[2], censored=[False], draft_length=[2])
    with pytest.raises(ValueError, match="NaN"):
        AcceptanceTrace(
            run_length=[0], censored=[False], draft_length=[1], confidences=[[0.5, 0.2]]
        )


# --------------------------------------------------------------------------- Kaplan-Meier


def test_kaplan_meier_matches_true_survival_under_censoring() -> None:
    rng = np.random.default_rng(3)
    n, kmax = 200_000, 8
    a = np.array([0.75, 0.5, 0.45, 0.4, 0.4, 0.35, 0.3, 0.3])
    true_s = np.cumprod(a)
    accepted = rng.random((n, kmax)) < a[None, :]
    g = np.cumprod(accepted, axis=1).sum(axis=1)
    k = rng.integers(1, kmax + 1, n)
    run = np.minimum(g, k)
    trace = AcceptanceTrace(run_length=run, censored=run == k, draft_length=k)
    assert trace.censored.mean() > 0.1
    km = trace.empirical_survival(kmax)
    # Sampling error: at most a few thousandths with >= 25k rounds at risk per position.
    np.testing.assert_allclose(km, true_s, atol=0.006)
    # The naive fraction that ignores censoring is biased low: the estimator must differ from it.
    naive = (run[:, None] >= np.arange(1, kmax + 1)[None, :]).mean(axis=0)
    assert np.all(naive[1:4] < true_s[1:4] - 0.02)


def test_kaplan_meier_equals_empirical_fraction_without_censoring() -> None:
    rng = np.random.default_rng(4)
    n, kmax = 5000, 8
    g = np.minimum(rng.geometric(0.45, n) - 1, kmax - 1)
    k = np.minimum(g + 1 + rng.integers(0, 3, n), kmax)  # every draft ends with a rejection
    trace = AcceptanceTrace(run_length=g, censored=np.zeros(n, bool), draft_length=k)
    fraction = (g[:, None] >= np.arange(1, kmax + 1)[None, :]).mean(axis=0)
    np.testing.assert_allclose(trace.empirical_survival(kmax), fraction, rtol=1e-12, atol=0)


def test_kaplan_meier_reuses_last_rate_beyond_the_data() -> None:
    # Rounds drafted at most 2 tokens; positions 3..5 have nobody at risk.
    trace = AcceptanceTrace(
        run_length=[2, 1, 0, 2], censored=[True, False, False, True], draft_length=[2, 2, 2, 2]
    )
    a = trace.conditional_acceptance(5)
    np.testing.assert_allclose(a[:2], [3 / 4, 2 / 3])
    np.testing.assert_allclose(a[2:], [2 / 3] * 3)
    np.testing.assert_allclose(trace.empirical_survival(5), np.cumprod(a))


def test_shipped_acceptance_traces_match_their_profiles() -> None:
    qwen = load_acceptance_trace(data_path("acceptance/qwen_geometric.jsonl"))
    llama = load_acceptance_trace(data_path("acceptance/llama_heavy_head.jsonl"))
    assert qwen.n_rounds == llama.n_rounds == 4000
    assert qwen.max_draft_length == llama.max_draft_length == 8
    assert 0.05 < qwen.censored.mean() < 0.3
    np.testing.assert_allclose(qwen.empirical_survival(4), 0.5 ** np.arange(1, 5), atol=0.03)
    np.testing.assert_allclose(
        llama.empirical_survival(3), [0.70, 0.70 * 0.28, 0.70 * 0.28**2], atol=0.03
    )
    assert (
        qwen.confidences is not None
        and np.nanmin(qwen.confidences) >= 0
        and np.nanmax(qwen.confidences) <= 1
    )
    for path in (qwen.path, llama.path):
        assert Path(path).stat().st_size < 1_000_000


# --------------------------------------------------------------------------- importers

PING_PLAIN = """\
$ ping -i 0.2 -c 6 example.org
PING example.org (93.184.216.34) 56(84) bytes of data.
64 bytes from 93.184.216.34: icmp_seq=1 ttl=57 time=15.2 ms
64 bytes from 93.184.216.34: icmp_seq=2 ttl=57 time=16.0 ms
64 bytes from 93.184.216.34: icmp_seq=2 ttl=57 time=16.9 ms (DUP!)
64 bytes from 93.184.216.34: icmp_seq=4 ttl=57 time=14.9 ms
64 bytes from 93.184.216.34: icmp_seq=5 ttl=57 time=21 ms

--- example.org ping statistics ---
6 packets transmitted, 4 received, +1 duplicates, 33.3333% packet loss, time 1004ms
rtt min/avg/max/mdev = 14.900/16.775/21.000/2.381 ms
"""

PING_D = """\
PING 2001:db8::1(2001:db8::1) 56 data bytes
[1723456789.115200] 64 bytes from 2001:db8::1: icmp_seq=1 ttl=57 time=15.2 ms
[1723456789.130000] 64 bytes from 2001:db8::1: icmp_seq=2 ttl=57 time=15.0 ms
[1723456789.160000] no answer yet for icmp_seq=3
[1723456789.180000] 64 bytes from 2001:db8::1: icmp_seq=4 ttl=57 time=20.0 ms
From 2001:db8::fe icmp_seq=5 Destination unreachable: Address unreachable
[1723456789.230500] 64 bytes from host.example (2001:db8::1): icmp_seq=6 ttl=57 time=30.5 ms
"""


def test_import_ping_without_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "ping.txt", PING_PLAIN)
    trace, lost = import_ping(path)
    assert lost == 1  # icmp_seq 3; the duplicate is ignored
    np.testing.assert_array_equal(trace.rtt_ms, [15.2, 16.0, 14.9, 21.0])
    np.testing.assert_allclose(trace.t_ms, [0, 200, 600, 800])  # -i 0.2 s from the recorded command
    assert trace.metadata["lost"] == "1" and trace.metadata["importer"] == "ping"
    trace2, _ = import_ping(path, interval_ms=50.0)
    np.testing.assert_allclose(trace2.t_ms, [0, 50, 150, 200])
    no_cmd = write(tmp_path, "ping_nocmd.txt", PING_PLAIN.split("\n", 1)[1])
    trace3, _ = import_ping(no_cmd)
    np.testing.assert_allclose(trace3.t_ms, [0, 1000, 3000, 4000])  # ping's default 1 s


def test_import_ping_with_timestamps(tmp_path: Path) -> None:
    trace, lost = import_ping(write(tmp_path, "ping_D.txt", PING_D))
    assert lost == 2  # seq 3 (no answer yet, -O) and seq 5 (unreachable)
    np.testing.assert_array_equal(trace.rtt_ms, [15.2, 15.0, 20.0, 30.5])
    # t = reply time - rtt, relative to the first answered probe's send time (1723456789100.0 ms)
    np.testing.assert_allclose(trace.t_ms, [0.0, 15.0, 60.0, 100.0], atol=1e-6)


def test_import_ping_counts_wrapped_sequence_numbers(tmp_path: Path) -> None:
    lines = [
        f"64 bytes from 10.0.0.1: icmp_seq={s} ttl=64 time=1.0 ms" for s in (65534, 65535, 1, 2)
    ]
    trace, lost = import_ping(write(tmp_path, "wrap.txt", "\n".join(lines) + "\n"), interval_ms=10)
    assert lost == 1  # seq 0 after the wrap
    np.testing.assert_allclose(trace.t_ms, [0, 10, 30, 40])


@pytest.mark.parametrize(
    "content, line",
    [
        (
            "PING x (1.2.3.4) 56(84) bytes of data.\n64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\nhello\n",
            3,
        ),
        ("64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=abc ms\n", 1),
        ("64 bytes from 1.2.3.4: icmp_seq=1 ttl=57\n", 1),
        ("PING x (1.2.3.4) 56(84) bytes of data.\n", 1),
        (
            (
                "[1723456789.1] 64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\n"
                "64 bytes from 1.2.3.4: icmp_seq=2 ttl=57 time=1 ms\n"
            ),
            2,
        ),
    ],
)
def test_import_ping_rejects_malformed(tmp_path: Path, content: str, line: int) -> None:
    path = write(tmp_path, "bad_ping.txt", content)
    with pytest.raises(TraceFormatError) as exc:
        import_ping(path)
    assert_format_error(exc, path, line)


FPING_D = """\
[1723456789.11520] 8.8.8.8 : [0], 64 bytes, 15.2 ms (15.2 avg, 0% loss)
[1723456789.13000] 8.8.8.8 : [1], 64 bytes, 10.0 ms (12.6 avg, 0% loss)
[1723456789.65000] 8.8.8.8 : [2], timed out (12.6 avg, 33% loss)
[1723456789.18000] 8.8.8.8 : [3], 64 bytes, 20.0 ms (15.0 avg, 25% loss)
8.8.8.8 : xmt/rcv/%loss = 4/3/25%, min/avg/max = 10.0/15.0/20.0
"""

FPING_TWO_HOSTS = """\
# fping -l -p 20 a.example b.example
a.example : [0], 64 bytes, 5.00 ms (5.00 avg, 0% loss)
b.example : [0], 64 bytes, 9.00 ms (9.00 avg, 0% loss)
a.example : [1], timed out (5.00 avg, 50% loss)
b.example : [1], 64 bytes, 9.50 ms (9.25 avg, 0% loss)
a.example : [2], 64 bytes, 6.00 ms (5.50 avg, 33% loss)
"""


def test_import_fping(tmp_path: Path) -> None:
    trace, lost = import_fping(write(tmp_path, "fping_D.txt", FPING_D))
    assert lost == 1
    np.testing.assert_array_equal(trace.rtt_ms, [15.2, 10.0, 20.0])
    np.testing.assert_allclose(trace.t_ms, [0.0, 20.0, 60.0], atol=1e-6)
    assert trace.metadata["target"] == "8.8.8.8"

    two = write(tmp_path, "fping_two.txt", FPING_TWO_HOSTS)
    with pytest.raises(TraceFormatError) as exc:
        import_fping(two)
    assert_format_error(exc, two, 3)
    a, lost_a = import_fping(two, host="a.example")
    assert lost_a == 1
    np.testing.assert_array_equal(a.rtt_ms, [5.0, 6.0])
    np.testing.assert_allclose(a.t_ms, [0.0, 40.0])  # -p 20 ms from the recorded command line


def test_import_fping_rejects_garbage(tmp_path: Path) -> None:
    path = write(tmp_path, "fping_bad.txt", FPING_D.replace("[3], 64 bytes", "[3], lots of bytes"))
    with pytest.raises(TraceFormatError) as exc:
        import_fping(path)
    assert_format_error(exc, path, 4)


def test_import_csv_columns(tmp_path: Path) -> None:
    text = (
        '# source: a measurement campaign\ntimestamp,"rtt (s)",cell,note\n'
        '1723456789.000,0.0152,1,"a, b"\n1723456789.050,0.0160,1,\n1723456789.100,,2,lost\n'
        "1723456789.150,0.0171,2,x\n"
    )
    path = write(tmp_path, "campaign.csv", text)
    with pytest.raises(TraceFormatError) as exc:
        import_csv_columns(path, "timestamp", "rtt (s)", time_unit="s", rtt_unit="s")
    assert_format_error(exc, path, 5)
    trace = import_csv_columns(
        path,
        "timestamp",
        "rtt (s)",
        time_unit="s",
        rtt_unit="s",
        state_column="cell",
        drop_missing=True,
    )
    np.testing.assert_allclose(trace.t_ms, [0.0, 50.0, 150.0], atol=1e-6)
    np.testing.assert_allclose(trace.rtt_ms, [15.2, 16.0, 17.1])
    np.testing.assert_array_equal(trace.state, [1, 1, 2])
    assert trace.metadata["source"] == "a measurement campaign" and trace.metadata["lost"] == "1"
    with pytest.raises(TraceFormatError) as exc:
        import_csv_columns(path, "time", "rtt (s)")
    assert_format_error(exc, path, 2)
    # round trip through the native format
    out = tmp_path / "campaign_delay.csv"
    write_delay_trace(out, trace)
    back = load_delay_trace(out)
    np.testing.assert_array_equal(back.rtt_ms, trace.rtt_ms)
    np.testing.assert_array_equal(back.state, trace.state)


def test_import_csv_columns_rejects_backwards_time(tmp_path: Path) -> None:
    path = write(tmp_path, "back.csv", "t,r\n0,10\n5,10\n4,10\n")
    with pytest.raises(TraceFormatError) as exc:
        import_csv_columns(path, "t", "r")
    assert_format_error(exc, path, 4)


# --------------------------------------------------------------------------- summary, plot, fit


def step_trace(levels: list[float], seconds_each: float, rng: np.random.Generator) -> DelayTrace:
    n_each = int(seconds_each * 1000 / 20)
    rtt = np.concatenate([lv * rng.lognormal(0, 0.05, n_each) for lv in levels])
    return DelayTrace(t_ms=np.arange(rtt.size) * 20.0, rtt_ms=rtt)


def test_regime_changes_found_at_the_steps() -> None:
    trace = step_trace([30, 30, 80, 80, 40], 10.0, np.random.default_rng(5))
    changes = detect_regime_changes(trace.t_ms, trace.rtt_ms)
    assert [round(t / 1000) for t, _, _ in changes] == [20, 40]
    (_, b1, a1), (_, b2, a2) = changes
    assert abs(b1 - 30) < 2 and abs(a1 - 80) < 4 and abs(b2 - 80) < 4 and abs(a2 - 40) < 2
    # stationary noise with spikes: no change reported
    rng = np.random.default_rng(6)
    rtt = 40 * rng.lognormal(0, 0.2, 5000)
    rtt[rng.random(5000) < 0.01] += 200
    assert detect_regime_changes(np.arange(5000) * 20.0, rtt) == []


def wander_trace(rho: float, seed: int) -> tuple[DelayTrace, list[float]]:
    """Six 100 s levels at 50 ms spacing with log-normal AR(1) noise (cv 0.1, lag-1 correlation
    ``rho``): a wandering link whose level changes 5 times (at 100, 200, ... 500 s)."""
    rng = np.random.default_rng(seed)
    n = 12000
    eps = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = eps[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho * rho) * eps[i]
    levels = np.repeat([30.0, 60.0, 30.0, 90.0, 40.0, 70.0], n // 6)
    return DelayTrace(t_ms=np.arange(n) * 50.0, rtt_ms=levels * np.exp(0.1 * x)), [1e5 * k for k in range(1, 6)]


@pytest.mark.parametrize("rho", [0.9, 0.98])
def test_regime_changes_do_not_flip_on_autocorrelated_wander(rho: float) -> None:
    trace, truth = wander_trace(rho, seed=11)
    changes = detect_regime_changes(trace.t_ms, trace.rtt_ms)
    assert len(changes) == 5
    for (t, before, after), t_true in zip(changes, truth):
        assert abs(t - t_true) <= 3000
    # the window comparison alone (the detector before regimes were consolidated) flips back
    # and forth within seconds on such a trace: many more candidates, and a measured noise
    # inflation well above 1
    cuts, inflation = _candidate_changes(trace.t_ms, trace.rtt_ms, window_ms=3000.0, min_shift_ms=3.0,
                                         min_rel_shift=0.05, min_samples=5, min_z=8.0)
    assert len(cuts) > 20 and inflation > 2.5


def test_regime_dwell_merges_short_excursions() -> None:
    rng = np.random.default_rng(12)
    t = np.arange(4500) * 20.0  # 90 s
    level = np.where(t < 60_000, 40.0, 80.0)
    level[(t >= 30_000) & (t < 34_000)] = 80.0  # a 4 s excursion
    trace = DelayTrace(t_ms=t, rtt_ms=level * rng.lognormal(0, 0.05, t.size))
    changes = detect_regime_changes(trace.t_ms, trace.rtt_ms)
    assert [round(c[0] / 1000) for c in changes] == [60]
    assert changes[0][1] == pytest.approx(40, rel=0.05) and changes[0][2] == pytest.approx(80, rel=0.05)
    short = detect_regime_changes(trace.t_ms, trace.rtt_ms, min_dwell_ms=0)
    assert [round(c[0] / 1000) for c in short] == [30, 34, 60]
    with pytest.raises(ValueError, match="min_dwell_ms"):
        detect_regime_changes(trace.t_ms, trace.rtt_ms, min_dwell_ms=-1)


def test_regime_changes_match_the_shipped_cellular_states() -> None:
    trace = load_delay_trace(data_path("delay/synthetic_cellular_handover.csv"))
    truth = trace.t_ms[np.flatnonzero(np.diff(trace.state)) + 1]
    s = summarize_delay_trace(trace)
    found = np.array([c[0] for c in s["regime_changes"]])
    assert found.size == truth.size == 14
    assert np.abs(found - truth).max() <= 500
    assert 1.0 <= s["change_point_method"]["noise_inflation"] < 1.2  # independent noise
    wifi = load_delay_trace(data_path("delay/synthetic_wifi_jitter.csv"))
    assert detect_regime_changes(wifi.t_ms, wifi.rtt_ms) == []


@pytest.mark.parametrize("flag,value", [("--min-dwell-ms", "-1"), ("--window-ms", "0"), ("--min-z", "nan")])
def test_cli_summary_refuses_bad_detector_flags(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = str(data_path("delay/synthetic_wifi_jitter.csv"))
    assert cli_main(["summary", shipped, flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"python -m specstop_gym.traces: error: {flag} must be") and "\n" not in err


def test_summary_and_plot(tmp_path: Path) -> None:
    trace = step_trace([30, 80], 10.0, np.random.default_rng(7))
    s = summarize_delay_trace(trace)
    assert s["rows"] == 1000 and s["duration_s"] == pytest.approx(19.98)
    assert s["rtt_min_ms"] <= s["rtt_median_ms"] <= s["rtt_p95_ms"] <= s["rtt_max_ms"]
    assert s["losses"] is None and len(s["regime_changes"]) == 1
    out = tmp_path / "plot.png"
    plot_delay_trace(trace, out, summary=s)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def simulate_two_state(
    rng: np.random.Generator,
    rates_per_ms: tuple[float, float],
    levels: tuple[float, float],
    duration_ms: float,
    step_ms: float,
) -> DelayTrace:
    t = np.arange(0.0, duration_ms, step_ms)
    state = np.empty(t.size, dtype=np.int64)
    s, now, i = 0, 0.0, 0
    while i < t.size:
        now += rng.exponential(1.0 / rates_per_ms[s])
        j = int(np.searchsorted(t, now))
        state[i:j] = s
        i, s = j, 1 - s
    rtt = np.asarray(levels)[state] * rng.lognormal(0, 0.1, t.size)
    return DelayTrace(t_ms=t, rtt_ms=rtt, state=state)


def test_fit_recovers_a_known_markov_channel() -> None:
    rates = (
        1 / 20_000,
        1 / 10_000,
    )  # per ms: leave state 0 after 20 s on average, state 1 after 10 s
    trace = simulate_two_state(np.random.default_rng(8), rates, (20.0, 80.0), 3_600_000.0, 50.0)
    lognormal_mean = np.exp(0.1**2 / 2)
    # Well-separated levels: without smoothing every sample is classified right.
    exact = fit_markov_channel(trace, 2, smooth_ms=0)
    np.testing.assert_allclose(np.array(exact["generator_per_ms"])[[0, 1], [1, 0]], rates, rtol=0.2)
    np.testing.assert_allclose(
        exact["rtt_mean_ms"], [20.0 * lognormal_mean, 80.0 * lognormal_mean], rtol=0.01
    )
    np.testing.assert_allclose(exact["rtt_cv"], [0.1, 0.1], atol=0.005)
    np.testing.assert_allclose(exact["stationary"], [2 / 3, 1 / 3], atol=0.05)
    np.testing.assert_allclose(exact["stationary"], exact["time_fraction"], atol=1e-9)
    # Default smoothing (1 s) misses visits shorter than about 0.5 s: rates and levels stay close,
    # the absorbed short visits widen the per-state spread.
    fit = fit_markov_channel(trace, 2)
    q = np.array(fit["generator_per_ms"])
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-15)
    np.testing.assert_allclose([q[0, 1], q[1, 0]], rates, rtol=0.3)
    np.testing.assert_allclose(
        fit["rtt_mean_ms"], [20.0 * lognormal_mean, 80.0 * lognormal_mean], rtol=0.03
    )
    assert all(0.09 < cv < 0.2 for cv in fit["rtt_cv"])
    assert fit["n_samples"] == trace.n_rows
    json.dumps(fit)  # plain JSON-ready types


def test_fit_rejects_impossible_state_count() -> None:
    trace = DelayTrace(t_ms=np.arange(10.0), rtt_ms=np.full(10, 5.0))
    with pytest.raises(ValueError):
        fit_markov_channel(trace, 2)
    assert fit_markov_channel(trace, 1)["generator_per_ms"] == [[0.0]]


def test_shipped_channels_are_usable() -> None:
    for name in ("nr5g_urban_n78", "starlink_isl"):
        doc = json.loads(data_path(f"channels/{name}.json").read_text())
        q = np.array(doc["generator_per_ms"])
        assert q.shape == (2, 2) and sum(q.sum(axis=1)) == 0.0
        assert np.all(q[~np.eye(2, dtype=bool)] > 0)
        assert len(doc["rtt_mean_ms"]) == len(doc["rtt_cv"]) == 2
        assert doc["rtt_mean_ms"][0] < doc["rtt_mean_ms"][1]
        assert sum(doc["stationary"]) == pytest.approx(1.0)
        assert doc["licence"].startswith("CC BY") and doc["source"] and doc["link"]
        assert doc["fitting_command"].startswith("python traces/fit_channels.py")


# --------------------------------------------------------------------------- manifest


def test_manifest_verifies_shipped_files() -> None:
    entries = verify_manifest()
    paths = {e["path"] for e in entries}
    assert {
        "delay/synthetic_wifi_jitter.csv",
        "delay/synthetic_cellular_handover.csv",
        "acceptance/qwen_geometric.jsonl",
        "acceptance/llama_heavy_head.jsonl",
        "channels/nr5g_urban_n78.json",
        "channels/starlink_isl.json",
    } <= paths
    for e in entries:
        assert e["kind"] in ("delay", "acceptance", "channel")
        assert (
            e["licence"]
            and e["source"]
            and e["units"]
            and e["rows"] >= 1
            and len(e["sha256"]) == 64
        )
        if e["synthetic"] == "yes":
            assert e["licence"].startswith("MIT")
    assert load_manifest()["format"] == "specstop-manifest-v1"
    delay = load_delay_trace(data_path("delay/synthetic_wifi_jitter.csv"))
    assert delay.metadata["synthetic"] == "yes" and delay.n_rows == 12000


def test_manifest_detects_tampering_and_missing_files(tmp_path: Path) -> None:
    copy = tmp_path / "traces"
    shutil.copytree(data_root(), copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    verify_manifest(copy)
    target = copy / "delay" / "synthetic_wifi_jitter.csv"
    data = bytearray(target.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    target.write_bytes(bytes(data))
    (copy / "acceptance" / "qwen_geometric.jsonl").unlink()
    with pytest.raises(ManifestError) as exc:
        verify_manifest(copy)
    msg = str(exc.value)
    assert "delay/synthetic_wifi_jitter.csv: checksum mismatch" in msg
    assert "acceptance/qwen_geometric.jsonl: missing" in msg


def test_data_path_refuses_escapes() -> None:
    with pytest.raises(ValueError):
        data_path("../pyproject.toml")
    with pytest.raises(FileNotFoundError):
        data_path("delay/no_such_file.csv")


# --------------------------------------------------------------------------- real traces


def test_real_traces_load_and_match_readme() -> None:
    """The two shipped measured traces match the figures of traces/README.md and carry their
    source, licence and attribution in their own headers (and so in the manifest)."""
    table = read_readme_table(REPO / "traces" / "README.md")
    assert set(table) == {"nr5g_urban_n78.csv", "starlink_isl_ping.csv"}
    manifest = {e["path"]: e for e in verify_manifest()}
    for name, row in table.items():
        trace = load_delay_trace(data_path(f"delay/{name}"))
        assert trace.metadata["licence"] == row["licence"] == manifest[f"delay/{name}"]["licence"]
        assert trace.metadata["source"] == row["source"] and trace.metadata["synthetic"] == "no"
        assert row["licence"] in trace.metadata["attribution"]
        s = summarize_delay_trace(trace)
        assert s["rows"] == int(row["rows"].replace(",", ""))
        expected = readme_rtt_stats(row)
        got = (s["rtt_min_ms"], s["rtt_median_ms"], s["rtt_p95_ms"], s["rtt_max_ms"])
        assert expected is not None
        np.testing.assert_allclose(got, expected, atol=0.5)
    assert table["nr5g_urban_n78.csv"]["licence"] == "CC BY 4.0"
    assert table["starlink_isl_ping.csv"]["licence"] == "CC BY-SA 4.0"
    starlink = summarize_delay_trace(load_delay_trace(data_path("delay/starlink_isl_ping.csv")))
    # the README's level shifts every 15 s, ending in 113 -> ... -> 213 ms
    assert len(starlink["regime_changes"]) >= 4
    assert starlink["regime_changes"][-1][2] == pytest.approx(213, abs=3)
    # no flip-flop: changes lie on the 15 s reconfiguration grid (intervals within 1.5 s of a
    # multiple of 15 s), none closer than 10 s
    gaps = np.diff([c[0] for c in starlink["regime_changes"]]) / 1000.0
    assert gaps.min() > 10 and np.abs(gaps - 15 * np.round(gaps / 15)).max() < 1.5


# --------------------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "specstop_gym.traces", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_subprocess_summary_and_bad_file(tmp_path: Path) -> None:
    shipped = str(data_path("delay/synthetic_cellular_handover.csv"))
    r = run_cli("summary", shipped, "--json", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["rows"] == 12000 and len(s["regime_changes"]) >= 5
    assert (tmp_path / "p.png").stat().st_size > 1000
    bad = write(tmp_path, "bad.csv", "t_ms,rtt_ms\n0,12\n50,-1\n")
    r = run_cli("summary", str(bad))
    assert r.returncode == 2
    assert "bad.csv line 3, field rtt_ms" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ping = write(tmp_path, "ping.txt", PING_PLAIN)
    out = tmp_path / "ping.csv"
    assert (
        cli_main(["convert", str(ping), str(out), "--format", "ping", "--meta", "licence=CC0"]) == 0
    )
    assert "1 lost" in capsys.readouterr().out
    back = load_delay_trace(out)
    assert back.n_rows == 4 and back.metadata["licence"] == "CC0"

    shipped = str(data_path("delay/synthetic_cellular_handover.csv"))
    assert cli_main(["fit", shipped, "--states", "3", "--out", str(tmp_path / "ch.json")]) == 0
    fit = json.loads((tmp_path / "ch.json").read_text())
    np.testing.assert_allclose(fit["rtt_mean_ms"], [25, 55, 110], rtol=0.1)

    assert cli_main(["summary", str(data_path("acceptance/qwen_geometric.jsonl"))]) == 0
    assert "Kaplan-Meier" in capsys.readouterr().out

    assert cli_main(["verify"]) == 0
    assert "files verified" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["convert", "{tmp}/p.txt", "{tmp}/o.csv", "--format", "ping"], "p.txt line 1"),
        (["convert", "{tmp}/p.txt", "{tmp}/o.csv", "--format", "csv"], "--time-column"),
        (["summary", "{tmp}/missing.csv"], "missing.csv"),
        (["fit", "{tmp}/p.txt", "--out", "{tmp}/x.json"], "p.txt line 1"),
    ],
)
def test_cli_user_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    write(tmp_path, "p.txt", "garbage\n")
    assert cli_main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m specstop_gym.traces: error: ") and expected in err
