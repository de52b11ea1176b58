"""Strict judging of the paper's claims (specstop_gym.evaluation.paper.judge) on synthetic points."""

from __future__ import annotations

import pytest

from specstop_gym.evaluation.paper import (
    PaperBudget,
    against,
    against_text,
    claims_from_grid,
    judge,
    point,
)


def ci(mean: float, half: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": 8}


def pts(*values: tuple[str, float, float]) -> list[dict]:
    return [point(label, ci(m, h)) for label, m, h in values]


def test_against_is_significance_on_the_wrong_side() -> None:
    p = point("x", ci(-1.0, 0.5))  # CI [-1.5, -0.5]
    assert against(p, 0.0, "above") and not against(p, 0.0, "below")
    assert not against(point("x", ci(-0.2, 0.5)), 0.0, "above")  # straddles 0: not significant
    assert against(point("gap", ci(3.0, 0.4)), 2.4, "below")  # [2.6, 3.4] > 2.4
    assert not against(point("gap", ci(2.6, 0.4)), 2.4, "below")
    with pytest.raises(ValueError, match="claimed"):
        against(p, 0.0, "sideways")


def test_up_to_claim_yes_partly_no() -> None:
    kw = {"paper": (0.0, 7.5), "bound": 0.0, "claimed": "above", "up_to": True}
    # all inside [0, 7.5], the largest (7.0 +- 1.0) contains 7.5 -> yes
    j = judge(pts(("a", 7.0, 1.0), ("b", 3.0, 0.5), ("c", 0.1, 0.3)), **kw)
    assert j["verdict"] == "yes" and j["against"] == [] and j["outside"] == [] and j["reaches_up_to"]
    # one point significantly the other way -> partly, and it is listed
    j = judge(pts(("a", 7.0, 1.0), ("b", -2.3, 0.5), ("c", 0.1, 0.3)), **kw)
    assert j["verdict"] == "partly" and j["against"] == ["b"] and against_text(j) == "b"
    # the largest point far above the paper's figure: outside -> partly (the old "best CI above 0" said yes)
    j = judge(pts(("a", 34.3, 0.6), ("b", 2.0, 0.4)), **kw)
    assert j["verdict"] == "partly" and j["outside"] == ["a"] and j["inside"] == ["b"] and not j["reaches_up_to"]
    assert j["largest"]["label"] == "a"
    # every point inside but the largest does not reach 7.5 -> partly
    j = judge(pts(("a", 4.0, 1.0), ("b", 2.0, 0.4)), **kw)
    assert j["verdict"] == "partly" and j["against"] == [] and j["outside"] == [] and j["reaches_up_to"] is False
    # nothing inside: all against or outside -> no, with the against points listed
    j = judge(pts(("a", -3.0, 0.5), ("b", 12.0, 1.0)), **kw)
    assert j["verdict"] == "no" and j["against"] == ["a"] and j["outside"] == ["b"]
    assert against_text(judge(pts(("a", 5.0, 3.0)), **kw)) == "none"


def test_range_claims() -> None:
    # (d): gap within 0.2-2.4%, against = significantly above 2.4
    kw = {"paper": (0.2, 2.4), "bound": 2.4, "claimed": "below"}
    assert judge(pts(("25 ms", 1.6, 0.3), ("50 ms", 2.5, 0.4)), **kw)["verdict"] == "yes"
    j = judge(pts(("25 ms", 1.6, 0.3), ("50 ms", 3.5, 0.4)), **kw)
    assert j["verdict"] == "partly" and j["against"] == ["50 ms"]
    assert judge(pts(("25 ms", 4.0, 0.3)), **kw)["verdict"] == "no"
    # (g): one preset inside, two with no gain -> partly (none against, two outside)
    kw = {"paper": (3.0, 6.8), "bound": 0.0, "claimed": "above"}
    j = judge(pts(("markov-csi", 3.2, 1.5), ("nr5g", 0.2, 0.5), ("starlink", 0.1, 0.2)), **kw)
    assert j["verdict"] == "partly" and j["outside"] == ["nr5g", "starlink"] and j["against"] == []
    # (f): a variant where ucb-specstop is worse than static tuning is listed as against
    kw = {"paper": (14.0, 18.7), "bound": 0.0, "claimed": "above"}
    j = judge(pts(("40 ms first", -9.6, 1.0), ("400 ms first", 9.4, 1.2), ("linear", 5.0, 0.8)), **kw)
    assert j["verdict"] == "no" and j["against"] == ["40 ms first"]
    assert judge([], **kw)["verdict"] is None


def test_claims_from_grid_lists_the_opposite_points() -> None:
    def row(preset: str, d: float, share: float, vs_sd: tuple, vs_naive: tuple, gap: tuple) -> dict:
        return {"preset": preset, "delay_ms": d, "rtt_share_of_oracle_time": share, "latency_ms": {},
                "ucb_vs_specdec_pct": ci(*vs_sd), "ucb_vs_naive_pct": ci(*vs_naive), "ucb_gap_to_oracle_pct": ci(*gap)}

    rows = [row("qwen-geometric", 25, 0.3, (24.8, 0.9), (7.0, 0.6), (0.6, 0.2)),
            row("qwen-geometric", 100, 0.6, (4.8, 0.5), (5.0, 0.6), (1.0, 0.3)),
            row("qwen-geometric", 400, 0.9, (-2.3, 0.5), (3.5, 0.6), (2.3, 0.6)),
            row("llama-heavy-head", 800, 0.95, (-1.7, 0.5), (1.0, 1.2), (3.0, 0.3))]
    c, d, e = claims_from_grid(rows, PaperBudget())
    assert c["consistent"] == "partly" and c["judgement"]["inside"] == ["qwen-geometric 100 ms"]
    assert c["judgement"]["against"] == ["qwen-geometric 400 ms", "llama-heavy-head 800 ms"]
    assert c["judgement"]["outside"] == ["qwen-geometric 25 ms"]
    assert "up to 24.8 ± 0.9% lower (qwen-geometric 25 ms)" in c["measured"]
    assert d["consistent"] == "partly" and d["judgement"]["against"] == ["llama-heavy-head 800 ms"]
    assert e["consistent"] == "yes" and e["judgement"]["reaches_up_to"]
