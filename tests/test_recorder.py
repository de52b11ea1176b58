"""Tests of the acceptance-trace recorder (specstop_gym.traces.recorder).

Tiny randomly initialised GPT-2 models are built inside the tests (nothing is
downloaded). The target is one model; the draft is a copy with small noise
added to its weights, so that acceptance is partial. The recorder's rounds are
checked against an independent, deliberately naive reimplementation of greedy
speculative verification (token-by-token greedy decoding with full forward
passes, no batching, no KV cache).
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from specstop_gym.traces.acceptance import load_acceptance_trace  # noqa: E402
from specstop_gym.traces.recorder import (  # noqa: E402
    SOURCE,
    main,
    record_acceptance_trace,
    record_to_file,
)

VOCAB = 50
MAX_DRAFT = 5
ROUNDS = 6
PROMPTS = [[1, 2, 3, 4], [5, 6, 7], [9, 10, 11, 12, 13, 14], [20]]


def _config(vocab_size: int = VOCAB):
    return transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=vocab_size, n_positions=128,
        bos_token_id=None, eos_token_id=None,
        initializer_range=0.5,  # peaked next-token distributions (confidences spread over [0.2, 0.8])
    )


def _tiny_pair(seed: int = 0, noise: float = 0.02):
    """(draft, target): target random, draft = target + Gaussian noise on every weight."""
    with torch.random.fork_rng():  # global RNG state restored on exit
        torch.manual_seed(seed)
        target = transformers.GPT2LMHeadModel(_config()).eval()
        draft = copy.deepcopy(target)
        with torch.no_grad():
            for p in draft.parameters():
                p.add_(noise * torch.randn_like(p))
    return draft, target


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and suffer least from a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pair():
    return _tiny_pair()


# --------------------------------------------------------------------------- #
# independent reference: plain greedy decoding, one token at a time
# --------------------------------------------------------------------------- #
def _next_logits(model, tokens: list[int]):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0, -1].double()


def reference_rounds(draft, target, prompt, draft_lengths):
    """(run length, confidences) per round of greedy speculative decoding, computed naively.

    Round ``r`` drafts ``draft_lengths[r]`` tokens with the draft model (greedy,
    one full forward per token); each drafted token is then compared with the
    target's own greedy token at that position (one full forward per position);
    the target's token at the first mismatch (or after the last drafted token)
    is appended after the accepted run.
    """
    seq = list(prompt)
    rows = []
    for draft_len in draft_lengths:
        drafted, confs = [], []
        for _ in range(draft_len):
            logits = _next_logits(draft, seq + drafted)
            tok = int(torch.argmax(logits))
            drafted.append(tok)
            confs.append(float(torch.softmax(logits, dim=-1)[tok]))
        g = 0
        while True:
            target_tok = int(torch.argmax(_next_logits(target, seq + drafted[:g])))
            if g == draft_len or target_tok != drafted[g]:
                break
            g += 1
        seq = seq + drafted[:g] + [target_tok]  # accepted run + correction / bonus
        rows.append((g, confs))
    return rows


@pytest.fixture(scope="module")
def reference(pair):
    draft, target = pair
    g, q = [], []
    for prompt in PROMPTS:
        for run, confs in reference_rounds(draft, target, prompt, [MAX_DRAFT] * ROUNDS):
            g.append(run)
            q.append(confs)
    return np.array(g), np.array(q)


def _record(draft, target, **kw):
    kw.setdefault("max_draft", MAX_DRAFT)
    kw.setdefault("rounds_per_prompt", ROUNDS)
    kw.setdefault("max_new_tokens", None)
    kw.setdefault("progress", False)
    prompts = kw.pop("prompts", [torch.tensor(p) for p in PROMPTS])
    return record_acceptance_trace(draft, target, prompts, **kw)


# --------------------------------------------------------------------------- #
# (1) agreement with the reference, round by round; (3) confidences
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("use_cache", [True, False])
def test_run_lengths_match_independent_reference(pair, reference, use_cache):
    draft, target = pair
    ref_g, ref_q = reference
    trace = _record(draft, target, use_cache=use_cache)
    assert trace.n_rounds == len(PROMPTS) * ROUNDS
    np.testing.assert_array_equal(trace.run_length, ref_g)
    np.testing.assert_array_equal(trace.draft_length, np.full(len(ref_g), MAX_DRAFT))
    np.testing.assert_array_equal(trace.censored, ref_g == MAX_DRAFT)
    # (3) confidences = draft softmax probability of the drafted token, in [0, 1]
    assert trace.confidences.shape == (len(ref_g), MAX_DRAFT)
    assert np.all((trace.confidences >= 0) & (trace.confidences <= 1))
    np.testing.assert_allclose(trace.confidences, ref_q, rtol=1e-4, atol=1e-7)
    assert np.ptp(trace.confidences) > 0.3  # informative, not ~1/vocab everywhere
    # the pair is informative: acceptance neither all nor nothing
    assert 0 < trace.censored.mean() < 1
    assert len(set(trace.run_length.tolist())) >= 3
    # timings were measured
    assert np.all(trace.draft_ms > 0) and np.all(trace.verify_ms > 0)
    assert trace.metadata["use_cache"] is use_cache


def test_max_new_tokens_and_variable_draft_lengths(pair):
    draft, target = pair

    def schedule(r, history):
        return 1 + (r % 3)  # 1, 2, 3, 1, 2, 3, ...

    trace = _record(draft, target, prompts=[PROMPTS[0]], rounds_per_prompt=None,
                    max_new_tokens=12, draft_length_schedule=schedule)
    k = trace.draft_length
    np.testing.assert_array_equal(k, [1 + (r % 3) for r in range(trace.n_rounds)])
    tokens = np.cumsum(trace.run_length + 1)
    assert tokens[-1] >= 12 and (trace.n_rounds == 1 or tokens[-2] < 12)
    # confidences are NaN-padded beyond each round's draft length
    q = trace.confidences
    assert q.shape == (trace.n_rounds, MAX_DRAFT)
    drafted = np.arange(MAX_DRAFT)[None, :] < k[:, None]
    assert np.all(np.isfinite(q[drafted])) and np.all(np.isnan(q[~drafted]))
    assert trace.metadata["draft_length_schedule"] == "callable:schedule"
    # the same rounds as the reference replaying those draft lengths
    ref = reference_rounds(draft, target, PROMPTS[0], k.tolist())
    np.testing.assert_array_equal(trace.run_length, [g for g, _ in ref])


def test_heuristic_and_uniform_schedules(pair):
    draft, target = pair
    before = torch.random.get_rng_state()
    t = _record(draft, target, prompts=[PROMPTS[1]], rounds_per_prompt=8,
                draft_length_schedule="heuristic", max_draft=6)
    k, g = t.draft_length, t.run_length
    assert k[0] == 6
    for r in range(1, t.n_rounds):
        want = k[r - 1] + 2 if g[r - 1] == k[r - 1] else k[r - 1] - 1
        assert k[r] == max(1, min(6, want))
    u1 = _record(draft, target, prompts=[PROMPTS[1]], rounds_per_prompt=8,
                 draft_length_schedule="uniform", seed=3)
    u2 = _record(draft, target, prompts=[PROMPTS[1]], rounds_per_prompt=8,
                 draft_length_schedule="uniform", seed=3)
    np.testing.assert_array_equal(u1.draft_length, u2.draft_length)
    np.testing.assert_array_equal(u1.run_length, u2.run_length)
    assert u1.draft_length.min() >= 1 and u1.draft_length.max() <= MAX_DRAFT
    # the global torch RNG is never touched
    assert torch.equal(before, torch.random.get_rng_state())


# --------------------------------------------------------------------------- #
# (2) write / reload
# --------------------------------------------------------------------------- #
def test_write_and_reload_identical(pair, tmp_path):
    draft, target = pair
    path = tmp_path / "trace.jsonl"
    trace = record_to_file(draft, target, [torch.tensor(p) for p in PROMPTS[:2]], path,
                           max_draft=MAX_DRAFT, rounds_per_prompt=4, max_new_tokens=None,
                           progress=False)
    back = load_acceptance_trace(path)
    np.testing.assert_array_equal(back.run_length, trace.run_length)
    np.testing.assert_array_equal(back.censored, trace.censored)
    np.testing.assert_array_equal(back.draft_length, trace.draft_length)
    np.testing.assert_array_equal(back.confidences, trace.confidences)
    np.testing.assert_array_equal(back.draft_ms, trace.draft_ms)
    np.testing.assert_array_equal(back.verify_ms, trace.verify_ms)
    assert back.metadata == trace.metadata
    meta = back.metadata
    assert meta["source"] == SOURCE
    assert meta["max_draft"] == MAX_DRAFT and meta["greedy"] is True
    assert "->" in meta["model_pair"] and meta["hardware"] and meta["date"]
    assert meta["rounds_by_prompt"] == [4, 4]


# --------------------------------------------------------------------------- #
# (4) identical models accept everything
# --------------------------------------------------------------------------- #
def test_identical_models_accept_every_token(pair):
    _, target = pair
    twin = copy.deepcopy(target)
    trace = _record(twin, target, prompts=PROMPTS[:2], rounds_per_prompt=4)
    assert np.all(trace.censored)
    np.testing.assert_array_equal(trace.run_length, trace.draft_length)
    np.testing.assert_array_equal(trace.run_length, np.full(8, MAX_DRAFT))


# --------------------------------------------------------------------------- #
# (5) validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"max_draft": 0}, ValueError, "max_draft"),
        ({"max_draft": 2.5}, ValueError, "max_draft"),
        ({"prompts": []}, ValueError, "prompts"),
        ({"prompts": [[]]}, ValueError, r"prompts\[0\]"),
        ({"prompts": [[1, 2, VOCAB]]}, ValueError, r"prompts\[0\].*vocabulary"),
        ({"prompts": ["hello"]}, ValueError, "tokenizer"),
        ({"prompts": [list(range(1, 49)) * 3]}, ValueError, r"prompts\[0\].*context"),
        ({"rounds_per_prompt": 0}, ValueError, "rounds_per_prompt"),
        ({"rounds_per_prompt": None, "max_new_tokens": None}, ValueError, "max_new_tokens"),
        ({"draft_length_schedule": "bogus"}, ValueError, "draft_length_schedule"),
        ({"draft_length_schedule": MAX_DRAFT + 1}, ValueError, "draft_length_schedule"),
        ({"draft_length_schedule": lambda r, h: 0}, ValueError, "draft_length_schedule"),
        ({"shared_vocab_size": VOCAB + 1}, ValueError, "shared_vocab_size"),
        ({"device": "not-a-device"}, ValueError, "device"),
        ({"eos_token_id": "x"}, ValueError, "eos_token_id"),
        ({"greedy": False}, NotImplementedError, "greedy"),
    ],
)
def test_bad_arguments_raise_naming_the_field(pair, kwargs, exc, match):
    draft, target = pair
    kwargs = dict(kwargs)
    kwargs.setdefault("prompts", [PROMPTS[0]])
    with pytest.raises(exc, match=match):
        _record(draft, target, **kwargs)


def test_mismatched_vocab_sizes(pair):
    draft, target = pair
    with torch.random.fork_rng():
        torch.manual_seed(1)
        bigger = transformers.GPT2LMHeadModel(_config(VOCAB + 14)).eval()
    with pytest.raises(ValueError, match="draft_model.*target_model"):
        _record(bigger, target, prompts=[PROMPTS[0]], rounds_per_prompt=1)
    # padded embedding matrices: explicit shared vocabulary makes it work
    t = _record(bigger, target, prompts=[PROMPTS[0]], rounds_per_prompt=2,
                shared_vocab_size=VOCAB)
    assert t.n_rounds == 2 and t.metadata["vocab_size"] == VOCAB


def test_missing_torch_gives_install_hint(pair, monkeypatch):
    draft, target = pair
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"specstop-gym\[record\]"):
        record_acceptance_trace(draft, target, [PROMPTS[0]], progress=False)


# --------------------------------------------------------------------------- #
# (6) command line on models saved to disk
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def saved_pair(pair, tmp_path_factory):
    draft, target = pair
    root = tmp_path_factory.mktemp("models")
    draft.save_pretrained(root / "draft")
    target.save_pretrained(root / "target")
    return root


def _save_tiny_tokenizer(directory):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(VOCAB - 1)}
    vocab["[UNK]"] = VOCAB - 1
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    hf.save_pretrained(directory)


def test_cli_with_prompt_ids(pair, saved_pair, tmp_path, capsys):
    draft, target = pair
    ids = tmp_path / "prompts.ids"
    ids.write_text("# token ids\n1 2 3 4\n\n5 6 7\n")
    out = tmp_path / "trace.jsonl"
    rc = main(["--draft", str(saved_pair / "draft"), "--target", str(saved_pair / "target"),
               "--prompt-ids", str(ids), "--out", str(out), "--max-draft", str(MAX_DRAFT),
               "--rounds-per-prompt", str(ROUNDS), "--max-new-tokens", "0", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    back = load_acceptance_trace(out)
    direct = _record(draft, target, prompts=PROMPTS[:2])
    np.testing.assert_array_equal(back.run_length, direct.run_length)
    np.testing.assert_array_equal(back.draft_length, direct.draft_length)
    np.testing.assert_allclose(back.confidences, direct.confidences, atol=1e-6)
    assert back.metadata["source"] == SOURCE
    assert back.metadata["model_dirs"]["target"] == str(saved_pair / "target")
    assert "wrote 12 rounds" in capsys.readouterr().err


def test_cli_with_text_prompts_and_tokenizer(saved_pair, tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    _save_tiny_tokenizer(tok_dir)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w1 w2 w3 w4\nw5 w6 w7\n")
    out = tmp_path / "trace.jsonl"
    rc = main(["--draft", str(saved_pair / "draft"), "--target", str(saved_pair / "target"),
               "--tokenizer", str(tok_dir), "--prompts", str(prompts), "--out", str(out),
               "--max-draft", "4", "--rounds-per-prompt", "3", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    back = load_acceptance_trace(out)
    assert back.n_rounds == 6 and back.metadata["max_draft"] == 4


def test_cli_errors(saved_pair, tmp_path, capsys):
    ids = tmp_path / "p.ids"
    ids.write_text("1 2 3\n")
    out = tmp_path / "t.jsonl"
    missing = tmp_path / "no-such-model"
    rc = main(["--draft", str(missing), "--target", str(saved_pair / "target"),
               "--prompt-ids", str(ids), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--draft" in err and "does not exist" in err and "local" in err
    bad = tmp_path / "bad.ids"
    bad.write_text("1 2 x\n")
    rc = main(["--draft", str(saved_pair / "draft"), "--target", str(saved_pair / "target"),
               "--prompt-ids", str(bad), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--prompt-ids" in err and ":1:" in err
    rc = main(["--draft", str(saved_pair / "draft"), "--target", str(saved_pair / "target"),
               "--prompt-ids", str(ids), "--out", str(out), "--max-draft", "0", "--no-progress"])
    assert rc == 2 and "max_draft" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "local" in capsys.readouterr().out.lower()
