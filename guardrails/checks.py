"""The public API of the guardrails: check_input, check_chunk, check_output, GuardConfig.

Order of work for an input: normalise (evasions undone), redact personal data (everything
after this sees only the redacted text, including the embedding and moderation providers),
rules, then the embedding classifiers on one query embedding, which the caller may pass in
and reuse for retrieval. Every check leaves a Verdict with its score and latency; the
result says what to do (allow, rewrite, block), why, and offers a safe rewrite when one exists.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal

from django.conf import settings

from gateway import provider
from guardrails import harm, injection, output, pii, rewrite, topic
from guardrails.classifier import LogisticModel
from guardrails.injection import ChunkVerdict
from guardrails.normalize import decode_plausible, normalize
from guardrails.pii import KINDS as PII_KINDS

logger = logging.getLogger(__name__)

Action = Literal["allow", "rewrite", "block"]
ACTIONS: tuple[Action, ...] = ("allow", "rewrite", "block")
DATA_DIR = Path(__file__).resolve().parent / "data"
HARM_MODEL_PATH = DATA_DIR / "harm.json"
INJECTION_MODEL_PATH = DATA_DIR / "injection.json"

# Used only when a model file carries no threshold of its own.
FALLBACK_HARM_THRESHOLD = 0.5
FALLBACK_INJECTION_THRESHOLD = 0.7  # rules only: the strong rules
# Cosine similarity between question (query) and scope (passage) below which a question is off
# topic, for multilingual-e5-small. On CLINC150 queries against three scopes (bench/guardrails.py)
# 0.75 wrongly blocked 0.7% of on-topic queries and caught 23% of off-topic ones: permissive on
# purpose. Other embedding models need their own value.
DEFAULT_TOPIC_THRESHOLD = 0.75
# A benign technical sense ("kill a process") scales the classifier's harm score by this.
BENIGN_SENSE_FACTOR = 0.3
RULE_BLOCK_SCORE = 0.99
RULE_REWRITE_SCORE = 0.9
MAX_DECODED_EMBEDDED = 3
BENIGN = "benign"  # the harm model's class for harmless requests

# OpenAI moderation categories -> ours.
MODERATION_CATEGORIES = {
    "sexual": "sexual",
    "sexual/minors": "sexual",
    "hate": "hate_discrimination",
    "hate/threatening": "hate_discrimination",
    "harassment": "harassment",
    "harassment/threatening": "harassment",
    "self-harm": "self_harm",
    "self-harm/intent": "self_harm",
    "self-harm/instructions": "self_harm",
    "violence": "violence_weapons",
    "violence/graphic": "violence_weapons",
    "illicit": "illegal_activity",
    "illicit/violent": "violence_weapons",
}
MODERATION_BLOCK = {"sexual/minors", "illicit/violent"}


# --- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardConfig:
    """Which checks run and how strict they are; an Assistant stores this as JSON (`as_dict`)."""

    harm: bool = True
    injection: bool = True
    pii: bool = True
    topic: bool = True  # only when a scope is given
    output: bool = True  # tone, leaks and personal data in answers
    harm_threshold: float | None = None  # None: the model file's threshold
    injection_threshold: float | None = None
    topic_threshold: float = DEFAULT_TOPIC_THRESHOLD
    # The retrieval similarity at which a close match in the user's own knowledge base vouches for
    # a question the harm classifier alone flagged: the documents they may read hold the answer
    # ("How can I protect my children?" in a health FAQ, which the classifier took for illegal
    # activity), so it is answered with a notice instead of stopped. Rule hits, moderation
    # verdicts and hidden text are never vouched for. 0.85 is the assistant's default
    # `min_similarity` for multilingual-e5-small, below which the pipeline abstains anyway. On a
    # health FAQ (bench/guardrails.py, "knowledge_vouching") none of its readers' 447 questions
    # stays stopped and 73 of the 913 Do-Not-Answer prompts the checks stop get a notice instead.
    knowledge_match: float = 0.85
    pii_action: str = "rewrite"  # rewrite: offer the redacted text; redact: send it silently; block
    pii_kinds: tuple[str, ...] = PII_KINDS
    max_input_chars: int = 8000
    use_moderation: bool = True  # the provider's moderation endpoint, when it has one
    classifiers: bool = True  # the embedding classifiers; False leaves rules only

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GuardConfig:
        """A config from stored JSON; unknown keys and bad values raise ValueError with the reason."""
        if not data:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("guardrail settings must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown guardrail setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in {"harm", "injection", "pii", "topic", "output", "use_moderation", "classifiers"}:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                values[name] = value
            elif name in {"harm_threshold", "injection_threshold", "topic_threshold", "knowledge_match"}:
                if value is None and name in {"harm_threshold", "injection_threshold"}:
                    values[name] = None
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                    raise ValueError(f"{name} must be a number from 0 to 1")
                values[name] = float(value)
            elif name == "pii_action":
                if value not in {"rewrite", "redact", "block"}:
                    raise ValueError("pii_action must be rewrite, redact or block")
                values[name] = value
            elif name == "pii_kinds":
                if not isinstance(value, list | tuple) or not set(value) <= set(pii.KINDS):
                    raise ValueError(f"pii_kinds must be a list drawn from {', '.join(pii.KINDS)}")
                values[name] = tuple(value)
            elif name == "max_input_chars":
                if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 1_000_000:
                    raise ValueError("max_input_chars must be a whole number from 100 to 1000000")
                values[name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["pii_kinds"] = list(self.pii_kinds)
        return data


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    check: str
    action: Action
    categories: list[str]
    score: float
    latency_ms: float
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "action": self.action,
            "categories": self.categories,
            "score": round(self.score, 4),
            "latency_ms": round(self.latency_ms, 3),
            "detail": self.detail,
        }


def reason_for(categories: Sequence[str]) -> str:
    """One sentence per distinct reason, for the person who sent the message."""
    reasons: list[str] = []
    for category in categories:
        text = rewrite.REASONS.get(category) or rewrite.REASONS.get(category.split(":")[0], "")
        if text and text not in reasons:
            reasons.append(text)
    return " ".join(reasons)


@dataclass(frozen=True)
class InputResult:
    action: Action
    text: str  # normalised + PII-redacted: the only form of the input to send on, log or cache
    categories: list[str]
    scores: dict[str, float]
    rewrite: str | None
    verdicts: list[Verdict]
    reason: str = ""
    latency_ms: float = 0.0  # the checks, without the embedding
    embedding_ms: float = 0.0  # the query embedding, when the checks had to compute it
    query_vector: list[float] | None = field(default=None, repr=False)  # for reuse by retrieval
    # Allowed, but to be answered with this notice shown: the harm classifier alone found the
    # question sensitive and a close knowledge-base match vouched for it. `notice_categories`
    # are the flags behind it (the harm verdict keeps them too, with action "allow").
    notice: str = ""
    notice_categories: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "categories": self.categories,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "rewrite": self.rewrite,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "embedding_ms": round(self.embedding_ms, 3),
            "notice": self.notice,
            "notice_categories": self.notice_categories,
            "verdicts": [v.as_json() for v in self.verdicts],
        }


@dataclass(frozen=True)
class OutputResult:
    action: Action  # allow; rewrite: show `text` instead; block: withhold the answer
    text: str  # the answer with secrets and personal data redacted (and a note when overconfident)
    categories: list[str]
    scores: dict[str, float]
    verdicts: list[Verdict]
    reason: str = ""
    latency_ms: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "categories": self.categories,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "verdicts": [v.as_json() for v in self.verdicts],
        }


# --- models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Models:
    harm: LogisticModel | None = None
    injection: LogisticModel | None = None


@cache
def _load(path: Path, embedding_model: str, dims: int) -> LogisticModel | None:
    if not path.exists():
        logger.warning("guardrail model %s is missing; run manage.py train_guardrails", path.name)
        return None
    model = LogisticModel.load(path)
    trained_on = model.meta.get("embedding_model")
    if trained_on != embedding_model or model.dims != dims:
        # Vectors of another model live in another space: the classifier would be noise.
        logger.warning(
            "guardrail model %s was trained on %s (%s dims), not %s (%s dims): rules only; "
            "retrain with manage.py train_guardrails",
            path.name,
            trained_on,
            model.dims,
            embedding_model,
            dims,
        )
        return None
    return model


def models() -> Models:
    """The classifiers that fit the configured embedding model (None where none does)."""
    return Models(
        harm=_load(HARM_MODEL_PATH, settings.EMBEDDING_MODEL, settings.EMBEDDING_DIMENSIONS),
        injection=_load(INJECTION_MODEL_PATH, settings.EMBEDDING_MODEL, settings.EMBEDDING_DIMENSIONS),
    )


def _threshold(configured: float | None, model: LogisticModel | None, fallback: float) -> float:
    if configured is not None:
        return configured
    if model is not None and isinstance(model.meta.get("threshold"), int | float):
        return float(model.meta["threshold"])
    return fallback


# --- input -------------------------------------------------------------------------------------


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


_BASE64_SEGMENT = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


def sanitize(text: str, config: GuardConfig | None = None) -> str:
    """The normalised, PII-redacted form of `text`: what the checks embed and what may be sent on."""
    config = config or GuardConfig()
    normalized = normalize(text, max_chars=config.max_input_chars)
    return pii.redact(normalized.text, config.pii_kinds).text if config.pii else normalized.text


def provider_text(text: str, config: GuardConfig | None = None) -> str:
    """Exactly the form of `text` that `check_input` returns as `InputResult.text`.

    `sanitize` plus base64 segments that hide personal data: what the answer pipeline embeds
    before the checks run, so that nothing personal reaches the embedding provider either.
    """
    config = config or GuardConfig()
    text = sanitize(text, config)
    return _hide_encoded_pii(text, config.pii_kinds)[0] if config.pii else text


def _hide_encoded_pii(text: str, kinds: Sequence[str]) -> tuple[str, int]:
    """Base64 segments whose decoded text holds personal data are replaced whole."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        decoded = decode_plausible(match.group(0))
        if decoded is not None and pii.find(decoded, kinds):
            count += 1
            return "[ENCODED_PII]"
        return match.group(0)

    return _BASE64_SEGMENT.sub(replace, text), count


def check_input(
    text: str,
    *,
    scope: str = "",
    query_vector: Sequence[float] | None = None,
    retrieval_score: float | None = None,
    retrieval_for_message: bool = True,
    config: GuardConfig | None = None,
) -> InputResult:
    """Check a user's message before any other work is done with it.

    `query_vector` is the embedding of `sanitize(text)`; without it the checks embed that text
    once (and return the vector as `query_vector` so retrieval need not embed it again).
    `scope` enables the off-topic check; `retrieval_score`, the best vector match of a search
    already made, counts as evidence of being on topic and, at `config.knowledge_match`, vouches
    for a harm flag the classifier alone raised on the message's own text (the user's documents
    answer the question). `retrieval_for_message` False says that search was made for more than
    this message (a follow-up searched together with the question before it): its score still
    counts as on topic, but vouches for nothing.
    """
    config = config or GuardConfig()
    began = time.perf_counter()
    verdicts: list[Verdict] = []
    scores: dict[str, float] = {}
    embedding_ms = 0.0

    started = time.perf_counter()
    normalized = normalize(text if isinstance(text, str) else str(text), max_chars=config.max_input_chars)
    verdicts.append(
        Verdict(
            "normalize",
            "allow",
            [],
            float(bool(normalized.changes)),
            _ms(started),
            ",".join(normalized.changes),
        )
    )

    started = time.perf_counter()
    safe_text = normalized.text
    pii_categories: list[str] = []
    if config.pii:
        redaction = pii.redact(normalized.text, config.pii_kinds)
        safe_text, encoded = _hide_encoded_pii(redaction.text, config.pii_kinds)
        pii_categories = [f"pii:{kind}" for kind in redaction.kinds] + (["pii:encoded"] if encoded else [])
        found = len(redaction.findings) + encoded
        scores["pii"] = float(found)
        pii_action: Action = "allow"
        if found and config.pii_action in {"rewrite", "block"}:
            pii_action = "rewrite" if config.pii_action == "rewrite" else "block"
        counts = ", ".join(f"{k}={n}" for k, n in sorted(redaction.counts().items()))
        verdicts.append(Verdict("pii", pii_action, pii_categories, float(found), _ms(started), counts))

    if normalized.truncated:
        verdicts.append(
            Verdict(
                "length",
                "block",
                ["too_long"],
                1.0,
                0.0,
                f"{normalized.original_length} characters; the limit is {config.max_input_chars}",
            )
        )
        stopped = ["too_long", *pii_categories]
        return InputResult(
            action="block",
            text=safe_text,
            categories=stopped,
            scores={**scores, "too_long": 1.0},
            rewrite=None,
            verdicts=verdicts,
            reason=reason_for(stopped),
            latency_ms=_ms(began),
        )

    loaded = models() if config.classifiers else Models()
    want_classifier = (config.harm and loaded.harm is not None) or (
        config.injection and loaded.injection is not None
    )
    want_topic = config.topic and bool(scope.strip()) and topic.judged(safe_text)
    vector: list[float] | None = list(query_vector) if query_vector is not None else None
    extra_vectors: list[list[float]] = []
    degraded = ""
    if (want_classifier or want_topic) and vector is None:
        started = time.perf_counter()
        try:
            vector = provider.embed([safe_text], kind="query").vectors[0]
        except provider.ProviderError as exc:
            degraded = f"no embedding ({exc.kind.value}): rules only"
        embedding_ms += _ms(started)
    if want_classifier and vector is not None and normalized.decoded:
        # Hidden text gets the classifiers too; it is rare, so one more call is acceptable.
        started = time.perf_counter()
        hidden = [pii.redact(d, config.pii_kinds).text for d in normalized.decoded[:MAX_DECODED_EMBEDDED]]
        try:
            extra_vectors = provider.embed(hidden, kind="query").vectors
        except provider.ProviderError:
            extra_vectors = []
        embedding_ms += _ms(started)
    all_vectors = [v for v in [vector, *extra_vectors] if v is not None]

    flags: dict[str, Any] = {}
    if config.injection:
        started = time.perf_counter()
        hits = injection.rule_hits(normalized.all_texts)
        rule = injection.rule_score(hits)
        clf = 0.0
        if loaded.injection is not None and all_vectors:
            clf = float(
                loaded.injection.predict_proba(all_vectors)[
                    :, loaded.injection.classes.index("injection")
                ].max()
            )
        score = 1 - (1 - rule) * (1 - clf)
        threshold = _threshold(config.injection_threshold, loaded.injection, FALLBACK_INJECTION_THRESHOLD)
        flagged = score >= threshold
        scores["injection"] = score
        flags["injection"] = flagged
        detail = f"rules={rule:.2f} ({','.join(sorted({h.rule for h in hits})) or '-'}) classifier={clf:.2f}"
        verdicts.append(
            Verdict(
                "injection",
                "rewrite" if flagged else "allow",
                ["injection"] if flagged else [],
                score,
                _ms(started),
                detail + (f"; {degraded}" if degraded else ""),
            )
        )

    harm_category = ""
    noticed: list[str] = []  # flags that let the message through with a notice
    harm_blocks = False
    harm_from_rules = False
    harm_threshold = FALLBACK_HARM_THRESHOLD
    if config.harm:
        started = time.perf_counter()
        score, harm_category, source = 0.0, "", "rules"
        by_classifier = False  # the score is the classifier's, on the message's own text
        moderation: provider.Moderation | None = None
        if config.use_moderation:
            try:
                moderation = provider.moderate(safe_text)
            except provider.ProviderError as exc:
                source = f"moderation failed ({exc.kind.value})"
        if moderation is not None:
            source = f"moderation ({moderation.model})"
            if moderation.scores:
                top = max(moderation.scores, key=lambda k: moderation.scores[k])
                score = moderation.scores[top]
                harm_category = MODERATION_CATEGORIES.get(top, "violence_weapons")
                harm_blocks = top in MODERATION_BLOCK and moderation.flagged
            if moderation.flagged:
                score = max(score, 0.99)
        if loaded.harm is not None and all_vectors:
            probabilities = loaded.harm.predict_proba(all_vectors)
            benign_index = loaded.harm.classes.index(BENIGN)
            row = int((1 - probabilities[:, benign_index]).argmax())
            clf = float(1 - probabilities[row, benign_index])
            if clf > score:
                ranked = [
                    (p, c)
                    for p, c in zip(probabilities[row], loaded.harm.classes, strict=True)
                    if c != BENIGN
                ]
                score, harm_category = clf, max(ranked)[1]
                by_classifier = row == 0  # row 0 is the visible text; the rest were hidden in it
            source += " + classifier"
        rule_hits = harm.rule_hits(normalized.all_texts)
        if harm.benign_sense(normalized.text) and not any(h.action == harm.BLOCK for h in rule_hits):
            score *= BENIGN_SENSE_FACTOR
            source += ", benign sense"
        elif by_classifier and harm_category == "privacy" and harm.record_question(normalized.text):
            score *= BENIGN_SENSE_FACTOR
            source += ", a question about a record"
        if rule_hits:
            strongest = next((h for h in rule_hits if h.action == harm.BLOCK), rule_hits[0])
            harm_category = strongest.category
            harm_blocks = harm_blocks or strongest.action == harm.BLOCK
            score = max(score, RULE_BLOCK_SCORE if harm_blocks else RULE_REWRITE_SCORE)
            source += f", rule {strongest.category}"
        threshold = harm_threshold = _threshold(config.harm_threshold, loaded.harm, FALLBACK_HARM_THRESHOLD)
        harm_from_rules = bool(rule_hits)
        flagged = score >= threshold and bool(harm_category)
        if (
            flagged
            and by_classifier
            and not rule_hits
            and not (moderation is not None and moderation.flagged)
            and retrieval_for_message
            and retrieval_score is not None
            and retrieval_score >= config.knowledge_match
        ):
            # The classifier alone never stops what the readable documents answer well: the
            # answer comes from them, so it is given, with a notice.
            flagged = False
            noticed.append(f"harm:{harm_category}")
            source += f", answered with a notice: a knowledge-base match ({retrieval_score:.2f}) vouches"
        scores["harm"] = score
        flags["harm"] = flagged
        action: Action = "allow"
        if flagged:
            action = (
                "block" if harm_blocks or harm.CATEGORY_POLICY.get(harm_category) == harm.BLOCK else "rewrite"
            )
        verdicts.append(
            Verdict(
                "harm",
                action,
                [f"harm:{harm_category}"] if flagged or noticed else [],
                score,
                _ms(started),
                source + (f"; {degraded}" if degraded else ""),
            )
        )

    if want_topic and vector is not None:
        started = time.perf_counter()
        try:
            similarity = topic.cosine(vector, topic.scope_vector(scope, settings.EMBEDDING_MODEL))
        except provider.ProviderError:
            similarity = 1.0  # unknown: permissive
        best = max(similarity, retrieval_score if retrieval_score is not None else -1.0)
        off = best < config.topic_threshold
        scores["off_topic"] = max(0.0, 1 - best)
        flags["off_topic"] = off
        verdicts.append(
            Verdict(
                "topic",
                "block" if off else "allow",
                ["off_topic"] if off else [],
                1 - best,
                _ms(started),
                f"scope similarity={similarity:.3f}"
                + (f" retrieval={retrieval_score:.3f}" if retrieval_score is not None else ""),
            )
        )

    # --- decision ---
    categories: list[str] = []
    offered: str | None = None
    final: Action = "allow"
    if flags.get("harm"):
        categories.append(f"harm:{harm_category}")
        verdict = next(v for v in verdicts if v.check == "harm")
        if verdict.action == "block":
            final = "block"
        else:
            if flags.get("injection") and not harm_from_rules:
                # The harmful part may be the injected instruction ("... and say you hate X"):
                # offer the legitimate remainder if it passes the harm check on its own.
                remainder = rewrite.without_injection(safe_text)
                if remainder is not None:
                    started = time.perf_counter()
                    if _harmless(remainder, loaded, harm_threshold, config):
                        offered = remainder
                    embedding_ms += _ms(started)
            # The subject of the rewrite comes from the message without its injected part.
            asked = (rewrite.without_injection(safe_text) if flags.get("injection") else None) or safe_text
            offered = offered or rewrite.harm_rewrite(harm_category, asked)
            final = "rewrite" if offered else "block"
    if flags.get("injection"):
        categories.append("injection")
        if final == "allow":
            offered = rewrite.without_injection(safe_text)
            final = "rewrite" if offered else "block"
    if pii_categories:
        categories.extend(pii_categories)
        if config.pii_action == "block":
            final, offered = "block", None
        elif config.pii_action == "rewrite" and final == "allow":
            final, offered = "rewrite", safe_text
    if flags.get("off_topic"):
        categories.append("off_topic")
        # Off topic is a weak signal: a safe version already on offer stays offered (it is
        # judged again when sent); otherwise the request is refused.
        if final != "rewrite":
            final, offered = "block", None
    if final == "block":
        offered = None
    elif final == "rewrite" and offered is not None:
        offered = pii.redact(offered, config.pii_kinds).text if config.pii else offered
    # A notice goes with an answer: a message stopped for another reason carries none.
    noticed = noticed if final == "allow" else []

    return InputResult(
        action=final,
        text=safe_text,
        categories=categories,
        scores=scores,
        rewrite=offered,
        verdicts=verdicts,
        reason=reason_for(categories),
        latency_ms=max(0.0, _ms(began) - embedding_ms),
        embedding_ms=embedding_ms,
        query_vector=vector,
        notice=rewrite.notice_for(noticed),
        notice_categories=noticed,
    )


def _harmless(text: str, loaded: Models, threshold: float, config: GuardConfig) -> bool:
    """Whether `text` passes the harm check by itself (False when that cannot be established)."""
    normalized = normalize(text, max_chars=config.max_input_chars)
    if harm.rule_hits(normalized.all_texts):
        return False
    try:
        if config.use_moderation:
            moderation = provider.moderate(text)
            if moderation is not None and moderation.flagged:
                return False
        if loaded.harm is None:
            return False
        vector = provider.embed([text], kind="query").vectors[0]
    except provider.ProviderError:
        return False
    score = float(1 - loaded.harm.predict_proba([vector])[0, loaded.harm.classes.index(BENIGN)])
    if harm.benign_sense(normalized.text):
        score *= BENIGN_SENSE_FACTOR
    return score < threshold


# --- chunks ------------------------------------------------------------------------------------


def check_chunk(text: str, *, threshold: float = 0.8) -> ChunkVerdict:
    """Injection in a retrieved chunk: instructions addressed to an AI, or overriding its own.

    The neutralised text replaces each offending sentence with a marker; use it in the prompt
    instead of the original, and mark the citation as quarantined. Rules only (no embedding).
    """
    normalized = normalize(text, max_chars=200_000)
    return injection.check_document_text(normalized.text, normalized.views, threshold=threshold)


# --- output ------------------------------------------------------------------------------------


def check_output(
    text: str,
    *,
    system_prompt: str = "",
    config: GuardConfig | None = None,
    json_schema: dict[str, Any] | None = None,
    protected_terms: Sequence[str] = (),
) -> OutputResult:
    """Check an answer before it is shown or stored.

    `json_schema` checks the format of a raw JSON output; `protected_terms` are identifiers of
    other users (names, e-mail addresses) that must not appear in this user's answer.
    """
    config = config or GuardConfig()
    began = time.perf_counter()
    verdicts: list[Verdict] = []
    scores: dict[str, float] = {}
    categories: list[str] = []
    final: Action = "allow"
    result = text

    def escalate(action: Action) -> None:
        nonlocal final
        if ACTIONS.index(action) > ACTIONS.index(final):
            final = action

    if json_schema is not None:
        started = time.perf_counter()
        errors = output.format_errors(text, json_schema)
        scores["format"] = float(bool(errors))
        if errors:
            categories.append("format")
            escalate("block")
        verdicts.append(
            Verdict(
                "format",
                "block" if errors else "allow",
                ["format"] if errors else [],
                float(bool(errors)),
                _ms(started),
                "; ".join(errors[:3]),
            )
        )

    if config.output:
        started = time.perf_counter()
        overlap = output.system_prompt_overlap(text, system_prompt) if system_prompt else 0.0
        secrets = output.redact_secrets(result)
        result = secrets.text
        others = output.redact_terms(result, protected_terms)
        result = others.text
        leak_categories = (["leak:system_prompt"] if overlap > 0 else []) + [
            f"leak:{kind}" for kind in (*secrets.kinds, *others.kinds)
        ]
        leak_action: Action = "block" if overlap > 0 else ("rewrite" if leak_categories else "allow")
        scores["leak"] = max(overlap, 1.0 if secrets.kinds or others.kinds else 0.0)
        categories.extend(leak_categories)
        escalate(leak_action)
        verdicts.append(
            Verdict(
                "leak",
                leak_action,
                leak_categories,
                scores["leak"],
                _ms(started),
                f"prompt overlap={overlap:.2f}",
            )
        )

        started = time.perf_counter()
        is_rude = output.rude(text)
        is_overconfident = output.overconfident(text)
        tone_categories = (["tone:rude"] if is_rude else []) + (
            ["tone:overconfident"] if is_overconfident else []
        )
        tone_action: Action = "block" if is_rude else ("rewrite" if is_overconfident else "allow")
        if is_overconfident and not is_rude:
            result = f"{result.rstrip()}\n\n{output.DISCLAIMER}"
        scores["tone"] = 1.0 if tone_categories else 0.0
        categories.extend(tone_categories)
        escalate(tone_action)
        verdicts.append(Verdict("tone", tone_action, tone_categories, scores["tone"], _ms(started)))

    if config.pii:
        started = time.perf_counter()
        redaction = pii.redact(result, config.pii_kinds)
        result = redaction.text
        pii_categories = [f"pii:{kind}" for kind in redaction.kinds]
        scores["pii"] = float(len(redaction.findings))
        categories.extend(pii_categories)
        pii_action: Action = "rewrite" if pii_categories else "allow"
        escalate(pii_action)
        verdicts.append(Verdict("pii", pii_action, pii_categories, scores["pii"], _ms(started)))

    return OutputResult(
        action=final,
        text=result,
        categories=categories,
        scores=scores,
        verdicts=verdicts,
        reason=_output_reason(categories),
        latency_ms=_ms(began),
    )


def output_stream_redactor(config: GuardConfig | None = None) -> output.StreamRedactor:
    """A StreamRedactor for a streamed answer: secrets and the configured personal data kinds."""
    config = config or GuardConfig()

    def redact(text: str) -> str:
        if config.output:
            text = output.redact_secrets(text).text
        if config.pii:
            text = pii.redact(text, config.pii_kinds).text
        return text

    return output.StreamRedactor(redact)


OUTPUT_REASONS = {
    "format": "The answer was not in the expected format.",
    "leak:system_prompt": "The answer repeated the assistant's instructions.",
    "leak": "Secrets or other people's data were removed from the answer.",
    "tone:rude": "The answer was rude.",
    "tone:overconfident": "The answer made overconfident claims; a note was added.",
    "pii": "Personal data was removed from the answer.",
}


def _output_reason(categories: Sequence[str]) -> str:
    reasons: list[str] = []
    for category in categories:
        text = OUTPUT_REASONS.get(category) or OUTPUT_REASONS.get(category.split(":")[0], "")
        if text and text not in reasons:
            reasons.append(text)
    return " ".join(reasons)
