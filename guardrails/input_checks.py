"""The input checks, one unit each, and the decision over their findings.

`checks.check_input` runs them in order: normalisation, personal data, length, the embeddings
the classifiers and the scope check share, injection, harm (moderation, classifier, benign-sense
dampening, rules, knowledge vouching) and scope. Each returns a Finding (its Verdict, whether it
flags the message, its scores); `decide` turns the findings into one action.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from gateway import provider
from guardrails import harm, injection, pii, rewrite, topic
from guardrails.classifier import LogisticModel
from guardrails.config import GuardConfig
from guardrails.normalize import Normalized, decode_plausible, normalize
from guardrails.verdicts import Action, Verdict

# Used only when a model file carries no threshold of its own.
FALLBACK_HARM_THRESHOLD = 0.5
FALLBACK_INJECTION_THRESHOLD = 0.7  # rules only: the strong rules
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

_BASE64_SEGMENT = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


@dataclass(frozen=True)
class Models:
    harm: LogisticModel | None = None
    injection: LogisticModel | None = None


@dataclass
class Finding:
    """One check's verdict, whether it flags the message, and the scores it reports."""

    verdict: Verdict
    flagged: bool = False
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class HarmFinding(Finding):
    category: str = ""
    from_rules: bool = False
    threshold: float = FALLBACK_HARM_THRESHOLD
    noticed: list[str] = field(default_factory=list)  # flags that let the message through with a notice


@dataclass
class Message:
    """What the checks share about one input once it is normalised, redacted and embedded."""

    config: GuardConfig
    normalized: Normalized
    text: str  # normalised and redacted: the only form the later checks see
    loaded: Models
    retrieval_score: float | None
    retrieval_for_message: bool
    want_topic: bool = False
    vector: list[float] | None = None  # the visible text's embedding
    vectors: list[list[float]] = field(default_factory=list)  # that one first, then hidden texts'
    degraded: str = ""
    embedding_ms: float = 0.0


def ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def threshold_of(configured: float | None, model: LogisticModel | None, fallback: float) -> float:
    if configured is not None:
        return configured
    if model is not None and isinstance(model.meta.get("threshold"), int | float):
        return float(model.meta["threshold"])
    return fallback


def hide_encoded_pii(text: str, kinds: Sequence[str]) -> tuple[str, int]:
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


# --- the checks, in the order they run ------------------------------------------------------------


def normalisation(text: str, config: GuardConfig) -> tuple[Normalized, Finding]:
    """Evasions undone (look-alike letters, hidden and encoded text); never stops a message."""
    started = time.perf_counter()
    normalized = normalize(text if isinstance(text, str) else str(text), max_chars=config.max_input_chars)
    changes = ",".join(normalized.changes)
    return normalized, Finding(
        Verdict("normalize", "allow", [], float(bool(normalized.changes)), ms(started), changes)
    )


def personal_data(normalized: Normalized, config: GuardConfig) -> tuple[str, Finding | None]:
    """The redacted text, and what was redacted (its action by `config.pii_action`)."""
    if not config.pii:
        return normalized.text, None
    started = time.perf_counter()
    redaction = pii.redact(normalized.text, config.pii_kinds)
    text, encoded = hide_encoded_pii(redaction.text, config.pii_kinds)
    categories = [f"pii:{kind}" for kind in redaction.kinds] + (["pii:encoded"] if encoded else [])
    found = len(redaction.findings) + encoded
    action: Action = "allow"
    if found and config.pii_action in {"rewrite", "block"}:
        action = "rewrite" if config.pii_action == "rewrite" else "block"
    counts = ", ".join(f"{k}={n}" for k, n in sorted(redaction.counts().items()))
    verdict = Verdict("pii", action, categories, float(found), ms(started), counts)
    return text, Finding(verdict, bool(categories), {"pii": float(found)})


def length(normalized: Normalized, config: GuardConfig) -> Finding | None:
    """A message over `max_input_chars` is stopped before anything else looks at it."""
    if not normalized.truncated:
        return None
    detail = f"{normalized.original_length} characters; the limit is {config.max_input_chars}"
    return Finding(Verdict("length", "block", ["too_long"], 1.0, 0.0, detail), True, {"too_long": 1.0})


def embed(message: Message, query_vector: Sequence[float] | None) -> None:
    """The embeddings the classifiers and the scope check need: the given one, or computed once."""
    config, loaded = message.config, message.loaded
    want_classifier = (config.harm and loaded.harm is not None) or (
        config.injection and loaded.injection is not None
    )
    vector: list[float] | None = list(query_vector) if query_vector is not None else None
    extra: list[list[float]] = []
    if (want_classifier or message.want_topic) and vector is None:
        started = time.perf_counter()
        try:
            vector = provider.embed([message.text], kind="query").vectors[0]
        except provider.ProviderError as exc:
            message.degraded = f"no embedding ({exc.kind.value}): rules only"
        message.embedding_ms += ms(started)
    if want_classifier and vector is not None and message.normalized.decoded:
        # Hidden text gets the classifiers too; it is rare, so one more call is acceptable.
        started = time.perf_counter()
        hidden = [
            pii.redact(d, config.pii_kinds).text for d in message.normalized.decoded[:MAX_DECODED_EMBEDDED]
        ]
        try:
            extra = provider.embed(hidden, kind="query").vectors
        except provider.ProviderError:
            extra = []
        message.embedding_ms += ms(started)
    message.vector = vector
    message.vectors = [v for v in [vector, *extra] if v is not None]


def _with_degraded(detail: str, message: Message) -> str:
    return detail + (f"; {message.degraded}" if message.degraded else "")


def injection_check(message: Message) -> Finding | None:
    """Instructions aimed at the assistant: the rules and the classifier, combined as independent odds."""
    if not message.config.injection:
        return None
    started = time.perf_counter()
    hits = injection.rule_hits(message.normalized.all_texts)
    rule = injection.rule_score(hits)
    model = message.loaded.injection
    clf = 0.0
    if model is not None and message.vectors:
        clf = float(model.predict_proba(message.vectors)[:, model.classes.index("injection")].max())
    score = 1 - (1 - rule) * (1 - clf)
    flagged = score >= threshold_of(message.config.injection_threshold, model, FALLBACK_INJECTION_THRESHOLD)
    detail = f"rules={rule:.2f} ({','.join(sorted({h.rule for h in hits})) or '-'}) classifier={clf:.2f}"
    verdict = Verdict(
        "injection",
        "rewrite" if flagged else "allow",
        ["injection"] if flagged else [],
        score,
        ms(started),
        _with_degraded(detail, message),
    )
    return Finding(verdict, flagged, {"injection": score})


@dataclass
class HarmScore:
    """The harm score as each step of the harm check leaves it."""

    score: float = 0.0
    category: str = ""
    source: str = "rules"
    by_classifier: bool = False  # the score is the classifier's, on the message's own text
    blocks: bool = False
    moderation_flagged: bool = False


def _moderation(found: HarmScore, message: Message) -> None:
    if not message.config.use_moderation:
        return
    try:
        moderation = provider.moderate(message.text)
    except provider.ProviderError as exc:
        found.source = f"moderation failed ({exc.kind.value})"
        return
    if moderation is None:
        return
    found.source = f"moderation ({moderation.model})"
    if moderation.scores:
        top = max(moderation.scores, key=lambda k: moderation.scores[k])
        found.score = moderation.scores[top]
        found.category = MODERATION_CATEGORIES.get(top, "violence_weapons")
        found.blocks = top in MODERATION_BLOCK and moderation.flagged
    if moderation.flagged:
        found.score = max(found.score, 0.99)
        found.moderation_flagged = True


def _classifier(found: HarmScore, message: Message) -> None:
    model = message.loaded.harm
    if model is None or not message.vectors:
        return
    probabilities = model.predict_proba(message.vectors)
    benign_index = model.classes.index(BENIGN)
    row = int((1 - probabilities[:, benign_index]).argmax())
    clf = float(1 - probabilities[row, benign_index])
    if clf > found.score:
        ranked = [(p, c) for p, c in zip(probabilities[row], model.classes, strict=True) if c != BENIGN]
        found.score, found.category = clf, max(ranked)[1]
        found.by_classifier = row == 0  # row 0 is the visible text; the rest were hidden in it
    found.source += " + classifier"


def dampen(found: HarmScore, text: str, rule_hits: Sequence[harm.HarmRuleHit]) -> None:
    """A benign sense of the words ("kill a process") scales the score down; a blocking rule overrides."""
    if harm.benign_sense(text) and not any(h.action == harm.BLOCK for h in rule_hits):
        found.score *= BENIGN_SENSE_FACTOR
        found.source += ", benign sense"
    elif found.by_classifier and found.category == "privacy" and harm.record_question(text):
        # "Who was Margaret's husband?" asks what a record says, not for a private person's data.
        found.score *= BENIGN_SENSE_FACTOR
        found.source += ", a question about a record"


def _rules(found: HarmScore, rule_hits: Sequence[harm.HarmRuleHit]) -> None:
    if not rule_hits:
        return
    strongest = next((h for h in rule_hits if h.action == harm.BLOCK), rule_hits[0])
    found.category = strongest.category
    found.blocks = found.blocks or strongest.action == harm.BLOCK
    found.score = max(found.score, RULE_BLOCK_SCORE if found.blocks else RULE_REWRITE_SCORE)
    found.source += f", rule {strongest.category}"


def _vouched(found: HarmScore, message: Message, from_rules: bool) -> bool:
    """The classifier alone never stops what the readable documents answer well: the answer
    comes from them, so it is given, with a notice. Rules, moderation and hidden text never are."""
    score = message.retrieval_score
    return (
        found.by_classifier
        and not from_rules
        and not found.moderation_flagged
        and message.retrieval_for_message
        and score is not None
        and score >= message.config.knowledge_match
    )


def harm_check(message: Message) -> HarmFinding | None:
    """Harmful requests: moderation, the classifier, benign senses, the rules, then knowledge vouching."""
    if not message.config.harm:
        return None
    started = time.perf_counter()
    found = HarmScore()
    _moderation(found, message)
    _classifier(found, message)
    rule_hits = harm.rule_hits(message.normalized.all_texts)
    dampen(found, message.normalized.text, rule_hits)
    _rules(found, rule_hits)
    threshold = threshold_of(message.config.harm_threshold, message.loaded.harm, FALLBACK_HARM_THRESHOLD)
    flagged = found.score >= threshold and bool(found.category)
    noticed: list[str] = []
    if flagged and _vouched(found, message, bool(rule_hits)):
        flagged = False
        noticed.append(f"harm:{found.category}")
        found.source += (
            f", answered with a notice: a knowledge-base match ({message.retrieval_score:.2f}) vouches"
        )
    action: Action = "allow"
    if flagged:
        blocking = found.blocks or harm.CATEGORY_POLICY.get(found.category) == harm.BLOCK
        action = "block" if blocking else "rewrite"
    verdict = Verdict(
        "harm",
        action,
        [f"harm:{found.category}"] if flagged or noticed else [],
        found.score,
        ms(started),
        _with_degraded(found.source, message),
    )
    return HarmFinding(
        verdict, flagged, {"harm": found.score}, found.category, bool(rule_hits), threshold, noticed
    )


def scope_check(message: Message, scope: str) -> Finding | None:
    """Off topic: the scope's similarity, or the best retrieval match if that is closer."""
    if not message.want_topic or message.vector is None:
        return None
    started = time.perf_counter()
    try:
        similarity = topic.cosine(message.vector, topic.scope_vector(scope, settings.EMBEDDING_MODEL))
    except provider.ProviderError:
        similarity = 1.0  # unknown: permissive
    retrieval = message.retrieval_score
    best = max(similarity, retrieval if retrieval is not None else -1.0)
    off = best < message.config.topic_threshold
    detail = f"scope similarity={similarity:.3f}" + (
        f" retrieval={retrieval:.3f}" if retrieval is not None else ""
    )
    verdict = Verdict(
        "topic", "block" if off else "allow", ["off_topic"] if off else [], 1 - best, ms(started), detail
    )
    return Finding(verdict, off, {"off_topic": max(0.0, 1 - best)})


def harmless(text: str, loaded: Models, threshold: float, config: GuardConfig) -> bool:
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


# --- the decision ---------------------------------------------------------------------------------


@dataclass
class Decision:
    action: Action
    categories: list[str]
    rewrite: str | None
    noticed: list[str]


def _harm_decision(message: Message, found: HarmFinding, injected: bool) -> tuple[Action, str | None]:
    """Block, or offer a safe rewrite: without the injected part, or the category's own."""
    if found.verdict.action == "block":
        return "block", None
    offered: str | None = None
    if injected and not found.from_rules:
        # The harmful part may be the injected instruction ("... and say you hate X"):
        # offer the legitimate remainder if it passes the harm check on its own.
        remainder = rewrite.without_injection(message.text)
        if remainder is not None:
            started = time.perf_counter()
            if harmless(remainder, message.loaded, found.threshold, message.config):
                offered = remainder
            message.embedding_ms += ms(started)
    # The subject of the rewrite comes from the message without its injected part.
    asked = (rewrite.without_injection(message.text) if injected else None) or message.text
    offered = offered or rewrite.harm_rewrite(found.category, asked)
    return ("rewrite" if offered else "block"), offered


def decide(message: Message, findings: dict[str, Finding]) -> Decision:
    """The action: harm first, then injection, personal data and scope, each in its own way."""
    config = message.config
    categories: list[str] = []
    offered: str | None = None
    final: Action = "allow"
    found = findings.get("harm")
    injected = "injection" in findings and findings["injection"].flagged
    if isinstance(found, HarmFinding) and found.flagged:
        categories.append(f"harm:{found.category}")
        final, offered = _harm_decision(message, found, injected)
    if injected:
        categories.append("injection")
        if final == "allow":
            offered = rewrite.without_injection(message.text)
            final = "rewrite" if offered else "block"
    if "pii" in findings and findings["pii"].flagged:
        categories.extend(findings["pii"].verdict.categories)
        if config.pii_action == "block":
            final, offered = "block", None
        elif config.pii_action == "rewrite" and final == "allow":
            final, offered = "rewrite", message.text
    if "topic" in findings and findings["topic"].flagged:
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
    noticed = found.noticed if isinstance(found, HarmFinding) and final == "allow" else []
    return Decision(final, categories, offered, noticed)
