"""Record an acceptance trace from a real draft/target pair of causal LMs.

This module is an *optional extra*: it needs ``torch`` and ``transformers``
(``pip install 'specstop-gym[record]'``). Both are imported lazily inside the
functions, so importing :mod:`specstop_gym.traces.recorder` never fails and the
rest of the package works without them.

What one recorded round is (greedy speculative decoding, SPEC sections 1, 2, 8):

1. The draft model drafts ``L`` tokens greedily (argmax) from the current
   prefix, one token at a time. For every drafted position it records the
   draft model's probability of the drafted token (softmax at temperature 1):
   that is the round's per-position *confidence*.
2. The target model runs ONE forward pass over ``prefix + L drafted tokens``.
3. The accepted run length ``G`` is the number of leading drafted tokens equal
   to the target's argmax at their position; ``censored = (G == L)``.
4. The target appends its own token (the correction at position ``G + 1``, or
   the bonus token after ``L``): the prefix grows by ``G + 1`` tokens.

``draft_ms`` is the wall time of step 1 and ``verify_ms`` the wall time of
step 2 (``time.perf_counter``; CUDA is synchronised around both).

Command line (local model directories only; nothing is downloaded)::

    python -m specstop_gym.traces.recorder --draft DRAFT_DIR --target TARGET_DIR \
        --prompts prompts.txt --out trace.jsonl --max-draft 8

See ``docs/recorder.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from specstop_gym.traces.acceptance import AcceptanceTrace

__all__ = ["SOURCE", "record_acceptance_trace", "record_to_file", "main"]

SOURCE = "specstop_gym.traces.recorder"
_INSTALL_HINT = (
    "the acceptance-trace recorder needs torch and transformers: "
    "install specstop-gym[record]  (pip install 'specstop-gym[record]')"
)
_SCHEDULE_NAMES = ("max", "uniform", "heuristic")

Schedule = Callable[[int, "list[tuple[int, int]]"], int]


# --------------------------------------------------------------------------- #
# lazy imports
# --------------------------------------------------------------------------- #
def _require_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"torch is not installed; {_INSTALL_HINT}") from exc
    return torch


def _require_transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"transformers is not installed; {_INSTALL_HINT}") from exc
    return transformers


# --------------------------------------------------------------------------- #
# model helpers
# --------------------------------------------------------------------------- #
def _text_config(model: Any) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        try:
            cfg = cfg.get_text_config()
        except Exception:  # pragma: no cover - exotic configs
            pass
    return cfg


def _vocab_size(model: Any, which: str) -> int:
    cfg = _text_config(model)
    vocab = getattr(cfg, "vocab_size", None) if cfg is not None else None
    if vocab is None and hasattr(model, "get_output_embeddings"):
        emb = model.get_output_embeddings()
        if emb is not None and hasattr(emb, "weight"):
            vocab = int(emb.weight.shape[0])
    if vocab is None:
        raise ValueError(
            f"{which}: cannot determine the vocabulary size (no config.vocab_size and no "
            "output embeddings); pass a Hugging Face causal LM"
        )
    return int(vocab)


def _max_positions(model: Any) -> int | None:
    cfg = _text_config(model)
    if cfg is None:
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        val = getattr(cfg, attr, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


def _model_name(model: Any) -> str:
    cfg = _text_config(model)
    full_cfg = getattr(model, "config", None)
    for c in (full_cfg, cfg):
        name = getattr(c, "_name_or_path", None) if c is not None else None
        if name:
            return str(name)
    return _model_summary(model)["summary"]


def _model_summary(model: Any) -> dict[str, Any]:
    cfg = _text_config(model)
    out: dict[str, Any] = {"class": type(model).__name__}
    if cfg is not None:
        for key in ("model_type", "vocab_size", "hidden_size", "n_embd", "num_hidden_layers",
                    "n_layer", "num_attention_heads", "n_head"):
            val = getattr(cfg, key, None)
            if isinstance(val, (int, str)):
                out[key] = val
    try:
        out["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
        out["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    except Exception:  # pragma: no cover - models without parameters
        pass
    parts = [str(out.get("model_type", out["class"]))]
    for key, short in (("num_hidden_layers", "L"), ("n_layer", "L"), ("hidden_size", "d"),
                       ("n_embd", "d"), ("vocab_size", "V")):
        if key in out:
            parts.append(f"{short}={out[key]}")
    if "n_parameters" in out:
        parts.append(f"params={out['n_parameters']}")
    out["summary"] = " ".join(dict.fromkeys(parts))
    return out


def _cpu_name() -> str:
    """CPU model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _hardware(torch, dev) -> tuple[str, dict[str, Any]]:
    details: dict[str, Any] = {
        "processor": _cpu_name(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
        "torch_num_threads": int(torch.get_num_threads()),
    }
    where = details["processor"]
    if dev.type == "cuda":
        try:
            details["gpu"] = torch.cuda.get_device_name(dev)
            where = details["gpu"]
        except Exception:  # pragma: no cover
            pass
    summary = f"{where}, torch device {dev}, {details['torch_num_threads']} torch threads"
    return summary, details


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):  # pragma: no cover
        torch.mps.synchronize()


def _output_cache(out: Any) -> Any:
    for key in ("cache", "past_key_values"):
        val = out.get(key) if hasattr(out, "get") else getattr(out, key, None)
        if val is not None:
            return val
    return None


class _GreedyLM:
    """One causal LM driven one sequence at a time, with an optional KV cache.

    ``logits(seq, n_last)`` returns the logits (truncated to ``vocab``) at the
    last ``n_last`` positions of the 1-D token tensor ``seq``. With the cache,
    only the tokens not yet in the cache are fed; ``rollback(n)`` keeps the
    first ``n`` cached positions. A cache that cannot be cropped (sliding
    window / recurrent layers) is dropped and rebuilt, which is slower but
    still exact.
    """

    def __init__(self, model: Any, *, vocab: int, use_cache: bool, torch) -> None:
        import inspect

        self.model = model
        self.vocab = vocab
        self.use_cache = use_cache
        self.torch = torch
        self.cache: Any = None
        self.cached_len = 0
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        self._logits_to_keep = "logits_to_keep" in params
        # transformers >= 5.x names the KV-cache argument ``cache``; older ones
        # ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def reset(self) -> None:
        self.cache = None
        self.cached_len = 0

    def rollback(self, keep: int) -> None:
        if self.cache is None or self.cached_len <= keep:
            return
        remove = self.cached_len - keep
        try:
            self.cache.crop(-remove)  # negative = "remove this many" in every HF version
            ok = int(self.cache.get_seq_length()) == keep
        except Exception:
            ok = False
        if ok:
            self.cached_len = keep
        else:
            self.reset()

    def _forward(self, input_ids, n_last: int, past):
        kwargs: dict[str, Any] = {"input_ids": input_ids[None, :]}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = n_last
        if self.use_cache:
            if past is not None:
                kwargs[self._cache_arg] = past
            kwargs["use_cache"] = True
        else:
            kwargs["use_cache"] = False
        return self.model(**kwargs)

    def logits(self, seq, n_last: int):
        n = int(seq.shape[0])
        if not self.use_cache:
            out = self._forward(seq, n_last, None)
        else:
            if self.cached_len > n - n_last:
                self.rollback(n - n_last)
            out = self._forward(seq[self.cached_len:], n_last, self.cache)
            self.cache = _output_cache(out)
            self.cached_len = n
            if self.cache is None:  # model ignored use_cache
                self.cached_len = 0
        return out.logits[0, -n_last:, : self.vocab].float()

    def prefill(self, seq) -> None:
        """Fill the cache with ``seq`` (untimed set-up before a prompt's first round)."""
        if self.use_cache and int(seq.shape[0]) > 0:
            self.logits(seq, 1)


# --------------------------------------------------------------------------- #
# argument handling
# --------------------------------------------------------------------------- #
def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _prepare_prompts(prompts: Any, tokenizer: Any, torch) -> list[list[int]]:
    if prompts is None or isinstance(prompts, (str, bytes)):
        raise ValueError(
            "prompts must be a non-empty list of token-id tensors / lists of ints, "
            f"or of strings together with tokenizer=; got {type(prompts).__name__}"
        )
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 1:
            prompts = [prompts]
        elif prompts.dim() == 2:
            prompts = list(prompts)
        else:
            raise ValueError(f"prompts: a tensor of prompts must be 1-D or 2-D, got shape "
                             f"{tuple(prompts.shape)}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    out: list[list[int]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if tokenizer is None:
                raise ValueError(
                    f"prompts[{i}] is a string but tokenizer is None: pass tokenizer= "
                    "or give token ids"
                )
            ids = tokenizer(p, add_special_tokens=True)["input_ids"]
            if ids and isinstance(ids[0], list):
                ids = ids[0]
            ids = [int(t) for t in ids]
        elif isinstance(p, torch.Tensor):
            if p.dim() == 2 and p.shape[0] == 1:
                p = p[0]
            if p.dim() != 1:
                raise ValueError(f"prompts[{i}] must be a 1-D tensor of token ids (or 1 x n), "
                                 f"got shape {tuple(p.shape)}")
            if p.is_floating_point() or p.is_complex():
                raise ValueError(f"prompts[{i}] must hold integer token ids, got dtype {p.dtype}")
            ids = [int(t) for t in p.tolist()]
        else:
            try:
                seq = list(p)
            except TypeError:
                raise ValueError(f"prompts[{i}] must be a sequence of token ids, got "
                                 f"{type(p).__name__}") from None
            if not all(_is_int(t) for t in seq):
                raise ValueError(f"prompts[{i}] must hold integer token ids")
            ids = [int(t) for t in seq]
        if not ids:
            raise ValueError(f"prompts[{i}] is empty (no tokens)")
        out.append(ids)
    return out


def _make_schedule(schedule: Any, max_draft: int, gen) -> tuple[Schedule, str]:
    """Return (callable(round_in_prompt, history) -> L, description)."""
    if _is_int(schedule):
        k = int(schedule)
        if not 1 <= k <= max_draft:
            raise ValueError(
                f"draft_length_schedule={k} must lie in [1, max_draft={max_draft}]"
            )
        return (lambda r, h: k), f"fixed:{k}"
    if isinstance(schedule, str):
        if schedule == "max":
            return (lambda r, h: max_draft), "max"
        if schedule == "uniform":
            torch = _require_torch()

            def uniform(r: int, h: list[tuple[int, int]]) -> int:
                return int(torch.randint(1, max_draft + 1, (1,), generator=gen).item())

            return uniform, "uniform"
        if schedule == "heuristic":
            # Hugging Face assisted generation: +2 after a fully accepted draft, -1 otherwise.
            def heuristic(r: int, h: list[tuple[int, int]]) -> int:
                if not h:
                    return max_draft
                prev_len, prev_g = h[-1]
                nxt = prev_len + 2 if prev_g == prev_len else prev_len - 1
                return max(1, min(max_draft, nxt))

            return heuristic, "heuristic"
        raise ValueError(
            f"draft_length_schedule must be one of {_SCHEDULE_NAMES}, an int in "
            f"[1, max_draft] or a callable; got {schedule!r}"
        )
    if callable(schedule):
        name = getattr(schedule, "__name__", type(schedule).__name__)
        return schedule, f"callable:{name}"
    raise ValueError(
        f"draft_length_schedule must be one of {_SCHEDULE_NAMES}, an int in "
        f"[1, max_draft] or a callable; got {schedule!r}"
    )


def _eos_set(eos_token_id: Any) -> frozenset[int]:
    if eos_token_id is None:
        return frozenset()
    if _is_int(eos_token_id):
        return frozenset({int(eos_token_id)})
    try:
        ids = list(eos_token_id)
    except TypeError:
        ids = None
    if ids is None or not all(_is_int(t) for t in ids):
        raise ValueError(f"eos_token_id must be None, an int or a list of ints, got "
                         f"{eos_token_id!r}")
    return frozenset(int(t) for t in ids)


# --------------------------------------------------------------------------- #
# the recorder
# --------------------------------------------------------------------------- #
def record_acceptance_trace(
    draft_model: Any,
    target_model: Any,
    prompts: Any,
    *,
    tokenizer: Any = None,
    max_draft: int = 8,
    rounds_per_prompt: int | None = None,
    max_new_tokens: int | None = 64,
    draft_length_schedule: str | int | Schedule = "max",
    greedy: bool = True,
    device: Any = "cpu",
    seed: int = 0,
    progress: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    use_cache: bool = True,
    shared_vocab_size: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> AcceptanceTrace:
    """Measure an acceptance trace by greedy speculative decoding with a real model pair.

    Parameters
    ----------
    draft_model, target_model:
        Hugging Face causal LMs (``AutoModelForCausalLM``) sharing one tokenizer.
        They are put in eval mode and moved to ``device`` (in place).
    prompts:
        A list of prompts, each a 1-D integer tensor (or ``1 x n``), a list of
        token ids, or a string (then ``tokenizer`` is required). A 2-D tensor
        is taken as one prompt per row.
    tokenizer:
        Used only to encode string prompts.
    max_draft:
        Largest draft length ``K_max`` (>= 1); width of ``confidences``.
    rounds_per_prompt, max_new_tokens:
        A prompt stops after ``rounds_per_prompt`` rounds or once it has
        generated at least ``max_new_tokens`` tokens, whichever comes first
        (``None`` = no limit on that count; at least one must be set). It also
        stops when the context is full or (if ``eos_token_id`` is set) after a
        round that emitted an end-of-sequence token.
    draft_length_schedule:
        Draft length ``L`` of each round: ``"max"`` (always ``max_draft``; the
        least-censored choice), an int, ``"uniform"`` (uniform on
        ``1..max_draft`` from a ``torch.Generator`` seeded with ``seed``),
        ``"heuristic"`` (Hugging Face assisted generation: +2 after a fully
        accepted draft, -1 otherwise, starting at ``max_draft``) or a callable
        ``f(round_in_prompt, history) -> int`` where ``history`` is the list of
        ``(draft_length, run_length)`` of the prompt's earlier rounds. ``L`` is
        shortened when the context would overflow.
    greedy:
        Only greedy verification (``True``) is implemented.
    device:
        Torch device for both models.
    seed:
        Seeds the local ``torch.Generator`` (only the ``"uniform"`` schedule draws
        random numbers; global torch RNG state is never touched).
    progress:
        Show a progress bar (tqdm, to stderr).
    eos_token_id:
        Token id(s) that end a prompt's generation (``None``: never stop on EOS).
    use_cache:
        Reuse KV caches between steps and rounds (rolled back after rejection).
        ``False`` runs a full forward pass per step: slower, same tokens.
    shared_vocab_size:
        Needed only when the two configs report different vocabulary sizes
        (e.g. padded embedding matrices): both models' logits are truncated to
        the first ``shared_vocab_size`` ids.
    metadata:
        Extra entries merged into the trace metadata.

    Returns
    -------
    AcceptanceTrace
        One record per round: ``run_length`` (G), ``censored`` (G == L),
        ``draft_length`` (L), ``confidences`` (``n_rounds x max_draft``,
        NaN-padded), ``draft_ms``, ``verify_ms`` and ``metadata``.
    """
    torch = _require_torch()
    transformers = _require_transformers()
    from specstop_gym.traces.acceptance import AcceptanceTrace

    # ---- validation -------------------------------------------------------
    max_draft = _check_positive_int("max_draft", max_draft)
    rounds_per_prompt = _check_positive_int("rounds_per_prompt", rounds_per_prompt,
                                            allow_none=True)
    max_new_tokens = _check_positive_int("max_new_tokens", max_new_tokens, allow_none=True)
    if rounds_per_prompt is None and max_new_tokens is None:
        raise ValueError("rounds_per_prompt and max_new_tokens are both None: set at least one "
                         "so that every prompt stops")
    if not isinstance(greedy, bool):
        raise ValueError(f"greedy must be a bool, got {greedy!r}")
    if not greedy:
        raise NotImplementedError(
            "greedy=False: only greedy verification is implemented (sampling-based "
            "speculative verification is not)"
        )
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: cannot parse {device!r} as a torch device ({exc})") from None
    for name, m in (("draft_model", draft_model), ("target_model", target_model)):
        if not isinstance(m, torch.nn.Module) or not callable(m):
            raise ValueError(f"{name} must be a torch/transformers causal LM module, got "
                             f"{type(m).__name__}")
    v_draft = _vocab_size(draft_model, "draft_model")
    v_target = _vocab_size(target_model, "target_model")
    if shared_vocab_size is None:
        if v_draft != v_target:
            raise ValueError(
                f"vocabulary sizes differ: draft_model has {v_draft}, target_model has "
                f"{v_target}. If they share a tokenizer and only the embedding matrices are "
                f"padded, pass shared_vocab_size=<tokenizer size> (<= {min(v_draft, v_target)})"
            )
        vocab = v_target
    else:
        vocab = _check_positive_int("shared_vocab_size", shared_vocab_size)
        if vocab > min(v_draft, v_target):
            raise ValueError(
                f"shared_vocab_size={vocab} exceeds a model's vocabulary (draft_model "
                f"{v_draft}, target_model {v_target})"
            )
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    eos = _eos_set(eos_token_id)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    schedule, schedule_name = _make_schedule(draft_length_schedule, max_draft, gen)

    prompt_ids = _prepare_prompts(prompts, tokenizer, torch)
    limits = [x for x in (_max_positions(draft_model), _max_positions(target_model)) if x]
    context_limit = min(limits) if limits else None
    for i, ids in enumerate(prompt_ids):
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompts[{i}] has token id {bad[0]} outside the vocabulary "
                             f"[0, {vocab})")
        if context_limit is not None and len(ids) + 1 > context_limit:
            raise ValueError(
                f"prompts[{i}] has {len(ids)} tokens: no room for a draft token within the "
                f"models' context of {context_limit} positions"
            )

    # ---- set-up -------------------------------------------------------------
    draft_model.eval()
    target_model.eval()
    draft_model.to(dev)
    target_model.to(dev)
    drafter = _GreedyLM(draft_model, vocab=vocab, use_cache=use_cache, torch=torch)
    verifier = _GreedyLM(target_model, vocab=vocab, use_cache=use_cache, torch=torch)

    run_lengths: list[int] = []
    draft_lengths: list[int] = []
    conf_rows: list[np.ndarray] = []
    draft_ms: list[float] = []
    verify_ms: list[float] = []
    prompt_index: list[int] = []

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompt_ids), desc="recording", unit="prompt", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm is a core dependency
            bar = None

    with torch.inference_mode():
        for p_idx, ids in enumerate(prompt_ids):
            seq = torch.tensor(ids, dtype=torch.long, device=dev)
            drafter.reset()
            verifier.reset()
            # Untimed prefill of everything but the last prompt token, so that every
            # timed round does the incremental work of a running decode.
            drafter.prefill(seq[:-1])
            verifier.prefill(seq[:-1])
            history: list[tuple[int, int]] = []
            generated = 0
            r = 0
            while True:
                if rounds_per_prompt is not None and r >= rounds_per_prompt:
                    break
                if max_new_tokens is not None and generated >= max_new_tokens:
                    break
                n_prefix = int(seq.shape[0])
                room = (context_limit - n_prefix) if context_limit is not None else max_draft
                if room < 1:
                    break
                want = schedule(r, list(history))
                if not _is_int(want) or not 1 <= int(want) <= max_draft:
                    raise ValueError(
                        f"draft_length_schedule returned {want!r} for round {r} of "
                        f"prompts[{p_idx}]; it must be an int in [1, max_draft={max_draft}]"
                    )
                L = min(int(want), room)

                # -- draft: L greedy tokens, one forward per token ----------------
                _sync(torch, dev)
                t0 = time.perf_counter()
                cur = seq
                drafted: list[int] = []
                confs = np.full(max_draft, np.nan)
                for pos in range(L):
                    logits = drafter.logits(cur, 1)[0]
                    tok = int(torch.argmax(logits).item())
                    confs[pos] = float(torch.softmax(logits, dim=-1)[tok].item())
                    drafted.append(tok)
                    cur = torch.cat([cur, torch.tensor([tok], dtype=torch.long, device=dev)])
                _sync(torch, dev)
                t1 = time.perf_counter()

                # -- verify: one target forward over prefix + L drafted tokens -----
                tlogits = verifier.logits(cur, L + 1)  # positions n_prefix-1 .. n_prefix+L-1
                target_tok = torch.argmax(tlogits, dim=-1).tolist()
                _sync(torch, dev)
                t2 = time.perf_counter()

                G = 0
                while G < L and drafted[G] == int(target_tok[G]):
                    G += 1
                new_tokens = drafted[:G] + [int(target_tok[G])]
                seq = torch.cat([seq, torch.tensor(new_tokens, dtype=torch.long, device=dev)])
                # Keep only cache entries for the accepted prefix (prefix + G drafted).
                drafter.rollback(n_prefix + G)
                verifier.rollback(n_prefix + G)

                run_lengths.append(G)
                draft_lengths.append(L)
                conf_rows.append(confs)
                draft_ms.append((t1 - t0) * 1e3)
                verify_ms.append((t2 - t1) * 1e3)
                prompt_index.append(p_idx)
                history.append((L, G))
                generated += G + 1
                r += 1
                if eos and any(t in eos for t in new_tokens):
                    break
            if bar is not None:
                bar.set_postfix(rounds=len(run_lengths),
                                mean_G=f"{np.mean(run_lengths):.2f}" if run_lengths else "-",
                                refresh=False)
                bar.update(1)
    if bar is not None:
        bar.close()

    if not run_lengths:  # pragma: no cover - prevented by the validation above
        raise RuntimeError("no round was recorded")

    hw_summary, hw_details = _hardware(torch, dev)
    rl = np.asarray(run_lengths, dtype=np.int64)
    dl = np.asarray(draft_lengths, dtype=np.int64)
    meta: dict[str, Any] = {
        "source": SOURCE,
        "model_pair": f"{_model_name(draft_model)} -> {_model_name(target_model)}",
        "synthetic": "no",
        "draft_model": _model_summary(draft_model),
        "target_model": _model_summary(target_model),
        "hardware": hw_summary,
        "hardware_details": hw_details,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "max_draft": max_draft,
        "greedy": True,
        "draft_length_schedule": schedule_name,
        "rounds_per_prompt": rounds_per_prompt,
        "max_new_tokens": max_new_tokens,
        "n_prompts": len(prompt_ids),
        "n_rounds": int(rl.shape[0]),
        "rounds_by_prompt": np.bincount(np.asarray(prompt_index), minlength=len(prompt_ids))
        .astype(int).tolist(),
        "seed": int(seed),
        "use_cache": bool(use_cache),
        "vocab_size": int(vocab),
        "eos_token_id": sorted(eos) or None,
        "confidence": "draft softmax probability (temperature 1) of the drafted token",
        "timing": "draft_ms: wall time of drafting L tokens; verify_ms: one target forward "
                  "over prefix + L tokens (time.perf_counter)",
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
    }
    if metadata:
        meta.update(metadata)
    return AcceptanceTrace(
        run_length=rl,
        censored=rl == dl,
        draft_length=dl,
        confidences=np.vstack(conf_rows).astype(np.float64),
        draft_ms=np.asarray(draft_ms, dtype=np.float64),
        verify_ms=np.asarray(verify_ms, dtype=np.float64),
        metadata=meta,
    )


def record_to_file(
    draft_model: Any,
    target_model: Any,
    prompts: Any,
    path: str | os.PathLike[str],
    **kwargs: Any,
) -> AcceptanceTrace:
    """Record a trace (see :func:`record_acceptance_trace`) and write it to ``path``.

    The file is written with :func:`specstop_gym.traces.acceptance.write_acceptance_trace`.
    Returns the recorded trace.
    """
    from specstop_gym.traces.acceptance import write_acceptance_trace

    if path is None or str(path) == "":
        raise ValueError("path must name the output file")
    trace = record_acceptance_trace(draft_model, target_model, prompts, **kwargs)
    write_acceptance_trace(path, trace)
    return trace


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
class _CLIError(Exception):
    pass


def _looks_like_path(s: str) -> bool:
    """True unless ``s`` could be a hub name (``name`` or ``org/name``)."""
    return (os.path.isabs(s) or s.startswith((".", "~")) or s.count("/") > 1
            or "\\" in s or os.path.exists(s))


def _check_model_location(flag: str, loc: str) -> None:
    if os.path.isdir(loc):
        return
    if os.path.exists(loc):
        raise _CLIError(f"{flag} {loc!r} is a file, not a model directory")
    if _looks_like_path(loc):
        raise _CLIError(
            f"{flag} model directory {loc!r} does not exist. The recorder loads local "
            "directories only (local_files_only=True, no downloads); fetch the model first, "
            "e.g. `hf download Qwen/Qwen2.5-0.5B --local-dir DIR`"
        )
    # Otherwise treat it as a hub name that may already be in the local HF cache.


def _load_model(flag: str, loc: str, dtype: str):
    torch = _require_torch()
    transformers = _require_transformers()
    _check_model_location(flag, loc)
    kwargs: dict[str, Any] = {"local_files_only": True}
    # ``torch_dtype`` was renamed ``dtype`` in transformers 4.56.
    major, minor = (int("".join(c for c in x if c.isdigit()) or 0)
                    for x in transformers.__version__.split(".")[:2])
    kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = (
        "auto" if dtype == "auto" else getattr(torch, dtype))
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(loc, **kwargs)
    except (OSError, ValueError) as exc:
        where = "directory" if os.path.isdir(loc) else "name (not a local directory, not in the local cache)"
        raise _CLIError(f"{flag}: cannot load a causal LM from {where} {loc!r}: {exc}") from exc


def _load_tokenizer(flag: str, loc: str):
    transformers = _require_transformers()
    _check_model_location(flag, loc)
    try:
        return transformers.AutoTokenizer.from_pretrained(loc, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise _CLIError(f"{flag}: cannot load a tokenizer from {loc!r}: {exc}") from exc


def _read_lines(flag: str, path: str) -> list[tuple[int, str]]:
    if not os.path.isfile(path):
        raise _CLIError(f"{flag} file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        lines = [(i, ln.rstrip("\n").rstrip("\r")) for i, ln in enumerate(fh, start=1)]
    return [(i, ln) for i, ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _read_prompt_ids(path: str) -> list[list[int]]:
    out = []
    for lineno, ln in _read_lines("--prompt-ids", path):
        try:
            ids = [int(t) for t in ln.split()]
        except ValueError:
            raise _CLIError(f"--prompt-ids {path}:{lineno}: expected whitespace-separated "
                            f"integer token ids, got {ln[:60]!r}") from None
        out.append(ids)
    if not out:
        raise _CLIError(f"--prompt-ids file {path!r} holds no prompts")
    return out


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m specstop_gym.traces.recorder",
        description=(
            "Record an acceptance trace (docs/spec.md section 8, docs/recorder.md) by greedy speculative decoding with a "
            "draft/target pair of Hugging Face causal LMs. Models are loaded from LOCAL "
            "directories only (AutoModelForCausalLM.from_pretrained(DIR, local_files_only="
            "True)); nothing is downloaded. A hub name works only if it is already in the "
            "local Hugging Face cache. Needs: pip install 'specstop-gym[record]'."
        ),
    )
    p.add_argument("--draft", required=True, metavar="DIR",
                   help="local directory of the draft model (save_pretrained layout)")
    p.add_argument("--target", required=True, metavar="DIR",
                   help="local directory of the target model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", metavar="FILE",
                     help="text file, one prompt per line (blank and #-lines skipped); "
                          "encoded with the tokenizer")
    src.add_argument("--prompt-ids", metavar="FILE",
                     help="file of pre-tokenised prompts: one per line, whitespace-separated "
                          "integer token ids (no tokenizer needed)")
    p.add_argument("--out", required=True, metavar="FILE", help="output acceptance trace")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="local tokenizer directory (default: the --target directory)")
    p.add_argument("--max-draft", type=int, default=8, help="largest draft length (default 8)")
    p.add_argument("--rounds-per-prompt", type=int, default=None,
                   help="stop a prompt after this many rounds (default: no round limit)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="stop a prompt after this many generated tokens (default 64; 0 = none)")
    p.add_argument("--schedule", default="max",
                   help="draft length per round: max | uniform | heuristic | INT (default max)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "bfloat16", "float16", "auto"],
                   help="weights dtype (default float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the local torch.Generator")
    p.add_argument("--no-cache", action="store_true",
                   help="full forward pass per step instead of KV caching")
    p.add_argument("--shared-vocab-size", type=int, default=None,
                   help="truncate logits to this many ids when the configs' vocab sizes differ "
                        "(default: the tokenizer's size, if a tokenizer is loaded)")
    p.add_argument("--eos-token-id", type=int, action="append", default=None,
                   help="token id ending a prompt (repeatable; default: the tokenizer's / "
                        "target generation config's EOS)")
    p.add_argument("--no-eos-stop", action="store_true", help="never stop a prompt on EOS")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 usage/input error)."""
    parser = _build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        _require_torch()
        _require_transformers()
        draft = _load_model("--draft", args.draft, args.dtype)
        target = _load_model("--target", args.target, args.dtype)
        tokenizer = None
        if args.prompts is not None:
            tokenizer = _load_tokenizer("--tokenizer" if args.tokenizer else "--target",
                                        args.tokenizer or args.target)
            prompts: list[Any] = [ln for _, ln in _read_lines("--prompts", args.prompts)]
            if not prompts:
                raise _CLIError(f"--prompts file {args.prompts!r} holds no prompts")
        else:
            if args.tokenizer:
                tokenizer = _load_tokenizer("--tokenizer", args.tokenizer)
            prompts = _read_prompt_ids(args.prompt_ids)

        schedule: Any = args.schedule
        if isinstance(schedule, str) and schedule.strip().lstrip("-").isdigit():
            schedule = int(schedule)

        eos: Any = None
        if not args.no_eos_stop:
            if args.eos_token_id:
                eos = list(args.eos_token_id)
            elif tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
                eos = int(tokenizer.eos_token_id)
            else:
                gc = getattr(target, "generation_config", None)
                eos = getattr(gc, "eos_token_id", None) if gc is not None else None

        shared = args.shared_vocab_size
        v_d, v_t = _vocab_size(draft, "--draft"), _vocab_size(target, "--target")
        if shared is None and v_d != v_t and tokenizer is not None:
            n_tok = len(tokenizer)
            if n_tok <= min(v_d, v_t):
                shared = n_tok
                print(f"note: vocab sizes differ (draft {v_d}, target {v_t}); logits truncated "
                      f"to the tokenizer's {n_tok} ids", file=sys.stderr)

        max_new = args.max_new_tokens if args.max_new_tokens and args.max_new_tokens > 0 else None
        trace = record_to_file(
            draft, target, prompts, args.out,
            tokenizer=tokenizer,
            max_draft=args.max_draft,
            rounds_per_prompt=args.rounds_per_prompt,
            max_new_tokens=max_new,
            draft_length_schedule=schedule,
            device=args.device,
            seed=args.seed,
            progress=not args.no_progress,
            eos_token_id=eos,
            use_cache=not args.no_cache,
            shared_vocab_size=shared,
            metadata={"model_dirs": {"draft": args.draft, "target": args.target}},
        )
    except (_CLIError, ValueError, NotImplementedError, FileNotFoundError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    n = int(trace.run_length.shape[0])
    mean_g = float(np.mean(trace.run_length))
    cens = float(np.mean(trace.censored))
    print(f"wrote {n} rounds to {args.out} (mean run length {mean_g:.3f}, "
          f"censored {cens:.1%}, max_draft {args.max_draft})", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
