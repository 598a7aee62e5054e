"""Train ↔ evaluation overlap: the audit every run writes to summary.json ``overlap``, and decontamination.

A validation or test record is *contaminated* when the training split holds
- the same record (``exact``: instruction, input and output equal after normalisation),
- the same prompt (``same_prompt``: instruction and input equal, whatever the answer), or
- a near duplicate (``near``): Jaccard similarity of word n-gram shingle sets ≥ ``threshold``.
The counts overlap (an exact duplicate has the same prompt too); ``contaminated`` counts records with any.
``test.in_validation`` counts test records whose text or prompt validation holds (selection on validation
then partly sees the test). Fields are joined with a separator token, so ("a b", "") is not ("a", "b");
records with no words are never matched.

Normalisation: Unicode NFKC, case folded, spacing and sentence punctuation dropped; words and symbols such as
``+ - * / = %`` are kept (dropping them makes "9 + 6" and "9 - 6" the same prompt). Near duplicates
are searched with MinHash locality-sensitive hashing (``datasketch``, as in the deduplication pipelines of
GPT-3, The Pile and The Stack: a candidate search that never compares all pairs) and every candidate is
then checked with the exact Jaccard of its shingle sets, so what is reported is a true similarity, not an
estimate. ``data.decontaminate=true`` drops every training record involved, before tokenisation.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from instructune.data.records import DataError, Record, Splits

log = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")
MAX_EXAMPLES = 5  # pairs shown in summary.json for a reader to judge


@dataclass(frozen=True)
class OverlapSpec:
    """``data.overlap``: shingle size (words), the near-duplicate Jaccard threshold, MinHash permutations."""

    ngram: int = 3
    threshold: float = 0.8
    num_perm: int = 128
    enabled: bool = True  # false: no audit (its cost grows with train x eval on templated data)

    def __post_init__(self) -> None:
        if self.ngram < 1 or not 0 < self.threshold <= 1 or self.num_perm < 16:
            raise DataError(f"data.overlap: ngram >= 1, 0 < threshold <= 1 and num_perm >= 16, got {self}")


_TOKEN = re.compile(r"\w+|[^\w\s.,;:!?'\"`()\[\]]")


def as_overlap_spec(overlap: OverlapSpec | Mapping[str, Any] | None) -> OverlapSpec:
    """``data.overlap`` as given (a node, a dict or nothing), unknown keys a one-line error."""
    if isinstance(overlap, OverlapSpec):
        return overlap
    try:
        return OverlapSpec(**dict(overlap or {}))
    except TypeError as e:
        raise DataError(f"data.overlap: {e}".replace("OverlapSpec.__init__() ", "")) from None


def normalise(text: str) -> str:
    """Case-, spacing- and sentence-punctuation-blind text: what "the same text" means here."""
    return " ".join(_TOKEN.findall(unicodedata.normalize("NFKC", text).casefold()))


SEPARATOR = " ¶ "  # between fields and turns: kept by normalise as a token of its own


def record_texts(record: Record) -> tuple[str, str]:
    """(prompt, whole record) of an instruction record or a conversation, normalised; ("", "") without words."""
    messages = record.get("messages")
    if messages:  # a conversation: everything before its last answer is the prompt
        fields = [m["content"] for m in messages]
    else:  # a preference pair's chosen answer is its output
        fields = [record.get("instruction", ""), record.get("input", ""), record.get("output", "")]
    parts = [normalise(f) for f in fields]
    if not any(parts):
        return "", ""
    return SEPARATOR.join(parts[:-1]).strip() if any(parts[:-1]) else "", SEPARATOR.join(parts).strip()


def shingles(text: str, n: int) -> frozenset[str]:
    words = text.split()
    if len(words) <= n:
        return frozenset([text]) if text else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class OverlapAudit:
    """The audit's findings: the report for summary.json and the training records involved."""

    report: dict[str, Any]
    train_indices: set[int]


def audit_overlap(splits: Splits, spec: OverlapSpec | None = None) -> OverlapAudit:
    """Compare every validation and test record with the training split (see the module docstring)."""
    from datasketch import MinHash, MinHashLSH

    spec = spec or OverlapSpec()
    if not spec.enabled:
        return OverlapAudit({"method": None}, set())
    train = splits.get("train", [])
    train_texts = [record_texts(r) for r in train]
    by_record: dict[str, list[int]] = {}
    by_prompt: dict[str, list[int]] = {}
    for i, (prompt, whole) in enumerate(train_texts):
        if whole:
            by_record.setdefault(whole, []).append(i)
        if prompt:
            by_prompt.setdefault(prompt, []).append(i)
    train_shingles = [shingles(whole, spec.ngram) for _, whole in train_texts]
    # the candidate search aims below the threshold and weighs misses 99:1 over false candidates (which the exact
    # Jaccard check removes): a pair at the threshold is missed with probability < 1e-3 at 128 permutations
    lsh = MinHashLSH(threshold=max(spec.threshold - 0.1, 0.05), num_perm=spec.num_perm, weights=(0.01, 0.99))
    hashes = MinHash.bulk([[s.encode() for s in sh] for sh in train_shingles], num_perm=spec.num_perm, seed=1)
    with lsh.insertion_session() as session:
        for i, (sh, h) in enumerate(zip(train_shingles, hashes, strict=True)):
            if sh:
                session.insert(i, h, check_duplication=False)
    involved: set[int] = set()
    report: dict[str, Any] = {"method": {"normalise": "NFKC, casefold, words and symbols", "ngram": spec.ngram,
                                         "threshold": spec.threshold, "num_perm": spec.num_perm}}
    examples: list[dict[str, Any]] = []
    split_texts: dict[str, list[tuple[str, str]]] = {}
    for split in EVAL_SPLITS:
        records = splits.get(split, [])
        texts = split_texts[split] = [record_texts(r) for r in records]
        evals = [shingles(whole, spec.ngram) for _, whole in texts]
        eval_hashes = MinHash.bulk([[s.encode() for s in sh] for sh in evals], num_perm=spec.num_perm, seed=1)
        exact = same_prompt = near = contaminated = 0
        for k, ((prompt, whole), sh, h) in enumerate(zip(texts, evals, eval_hashes, strict=True)):
            hits = set(by_record.get(whole, [])) if whole else set()
            exact += bool(hits)
            prompt_hits = set(by_prompt.get(prompt, [])) if prompt else set()
            same_prompt += bool(prompt_hits)
            near_hits = {i for i in (lsh.query(h) if sh else []) if i not in hits
                         and jaccard(sh, train_shingles[i]) >= spec.threshold}
            near += bool(near_hits)
            found = hits | prompt_hits | near_hits
            contaminated += bool(found)
            involved |= found
            if found and len(examples) < MAX_EXAMPLES:
                i = min(found)
                examples.append({"split": split, "index": k, "train_index": i,
                                 "jaccard": round(jaccard(sh, train_shingles[i]), 3), "text": whole[:160],
                                 "train_text": train_texts[i][1][:160]})
        report[split] = {"records": len(records), "exact": exact, "same_prompt": same_prompt, "near": near,
                         "contaminated": contaminated,
                         "fraction": round(contaminated / len(records), 4) if records else 0.0}
    if "test" in report:  # test items validation already holds: choosing on validation partly sees the test
        seen = {t for r in splits.get("validation", []) for t in record_texts(r) if t}
        report["test"]["in_validation"] = sum(bool(whole and (whole in seen or (prompt and prompt in seen)))
                                              for prompt, whole in split_texts["test"])
    report["train_records_involved"] = len(involved)
    report["examples"] = examples
    return OverlapAudit(report, involved)


def decontaminate(records: Sequence[Record], drop: set[int]) -> list[Record]:
    """The training records the audit did not involve."""
    return [r for i, r in enumerate(records) if i not in drop]


def audit_and_decontaminate(splits: Splits, spec: OverlapSpec, drop: bool) -> dict[str, Any]:
    """Audit ``splits`` and, with ``drop`` (``data.decontaminate``), remove the training records involved from
    ``splits["train"]`` in place; returns summary.json ``overlap`` (``decontaminated``: how many were dropped)."""
    audit = audit_overlap(splits, spec)
    report = {**audit.report, "decontaminated": 0}
    if audit.report.get("method") is None:
        return report
    log.info(overlap_summary(audit.report))
    if drop and audit.train_indices:
        splits["train"] = decontaminate(splits["train"], audit.train_indices)
        report["decontaminated"] = len(audit.train_indices)
        log.info("data.decontaminate: dropped %d training record(s) that overlap validation or test",
                 len(audit.train_indices))
    return report


def overlap_summary(report: Mapping[str, Any]) -> str:
    """One log line: how much of each evaluation split the training data already holds."""
    parts = [f"{s} {report[s]['contaminated']}/{report[s]['records']} (exact {report[s]['exact']}, same prompt "
             f"{report[s]['same_prompt']}, near {report[s]['near']})" for s in EVAL_SPLITS if s in report]
    return "train/eval overlap: " + "; ".join(parts)
