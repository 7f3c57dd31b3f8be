"""The public API of the guardrails: check_input, check_chunk, check_output, GuardConfig.

Order of work for an input: normalise (evasions undone), redact personal data (everything
after this sees only the redacted text, including the embedding and moderation providers),
rules, then the embedding classifiers on one query embedding, which the caller may pass in
and reuse for retrieval. Every check (guardrails/input_checks.py) leaves a Verdict with its
score and latency; the result says what to do (allow, rewrite, block), why, and offers a safe
rewrite when one exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings

from guardrails import injection, input_checks, output, pii, rewrite, topic
from guardrails.classifier import LogisticModel
from guardrails.config import DEFAULT_TOPIC_THRESHOLD, GuardConfig
from guardrails.injection import ChunkVerdict
from guardrails.input_checks import BENIGN_SENSE_FACTOR, Finding, Message, Models, ms
from guardrails.normalize import normalize
from guardrails.verdicts import ACTIONS, Action, InputResult, OutputResult, Verdict, output_reason, reason_for

__all__ = [
    "ACTIONS",
    "BENIGN_SENSE_FACTOR",
    "DEFAULT_TOPIC_THRESHOLD",
    "Action",
    "GuardConfig",
    "InputResult",
    "Models",
    "OutputResult",
    "Verdict",
    "check_chunk",
    "check_input",
    "check_output",
    "models",
    "output_stream_redactor",
    "provider_text",
    "reason_for",
    "sanitize",
]

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
HARM_MODEL_PATH = DATA_DIR / "harm.json"
INJECTION_MODEL_PATH = DATA_DIR / "injection.json"


# --- models ------------------------------------------------------------------------------------


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


# --- input -------------------------------------------------------------------------------------


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
    return input_checks.hide_encoded_pii(text, config.pii_kinds)[0] if config.pii else text


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
    normalized, normalised = input_checks.normalisation(text, config)
    safe_text, personal = input_checks.personal_data(normalized, config)
    findings: list[Finding] = [f for f in (normalised, personal) if f is not None]
    too_long = input_checks.length(normalized, config)
    if too_long is not None:
        findings.append(too_long)
        stopped = ["too_long", *(personal.verdict.categories if personal else [])]
        return InputResult(
            action="block",
            text=safe_text,
            categories=stopped,
            scores={k: v for f in findings for k, v in f.scores.items()},
            rewrite=None,
            verdicts=[f.verdict for f in findings],
            reason=reason_for(stopped),
            latency_ms=ms(began),
        )
    message = Message(
        config,
        normalized,
        safe_text,
        models() if config.classifiers else Models(),
        retrieval_score,
        retrieval_for_message,
        want_topic=config.topic and bool(scope.strip()) and topic.judged(safe_text),
    )
    input_checks.embed(message, query_vector)
    for later in (
        input_checks.injection_check(message),
        input_checks.harm_check(message),
        input_checks.scope_check(message, scope),
    ):
        if later is not None:
            findings.append(later)
    decision = input_checks.decide(message, {f.verdict.check: f for f in findings})
    return InputResult(
        action=decision.action,
        text=safe_text,
        categories=decision.categories,
        scores={k: v for f in findings for k, v in f.scores.items()},
        rewrite=decision.rewrite,
        verdicts=[f.verdict for f in findings],
        reason=reason_for(decision.categories),
        latency_ms=max(0.0, ms(began) - message.embedding_ms),
        embedding_ms=message.embedding_ms,
        query_vector=message.vector,
        notice=rewrite.notice_for(decision.noticed),
        notice_categories=decision.noticed,
    )


# --- chunks ------------------------------------------------------------------------------------


def check_chunk(text: str, *, threshold: float = 0.8) -> ChunkVerdict:
    """Injection in a retrieved chunk: instructions addressed to an AI, or overriding its own.

    The neutralised text replaces each offending sentence with a marker; use it in the prompt
    instead of the original, and mark the citation as quarantined. Rules only (no embedding).
    """
    normalized = normalize(text, max_chars=200_000)
    return injection.check_document_text(normalized.text, normalized.views, threshold=threshold)


# --- output ------------------------------------------------------------------------------------


def _format_check(text: str, json_schema: dict[str, Any]) -> Verdict:
    started = time.perf_counter()
    errors = output.format_errors(text, json_schema)
    flagged = bool(errors)
    return Verdict(
        "format",
        "block" if flagged else "allow",
        ["format"] if flagged else [],
        float(flagged),
        ms(started),
        "; ".join(errors[:3]),
    )


def _leak_check(
    text: str, shown: str, system_prompt: str, protected_terms: Sequence[str]
) -> tuple[Verdict, str]:
    """The system prompt repeated (block), secrets and other users' identifiers (redacted)."""
    started = time.perf_counter()
    overlap = output.system_prompt_overlap(text, system_prompt) if system_prompt else 0.0
    secrets = output.redact_secrets(shown)
    others = output.redact_terms(secrets.text, protected_terms)
    categories = (["leak:system_prompt"] if overlap > 0 else []) + [
        f"leak:{kind}" for kind in (*secrets.kinds, *others.kinds)
    ]
    action: Action = "block" if overlap > 0 else ("rewrite" if categories else "allow")
    score = max(overlap, 1.0 if secrets.kinds or others.kinds else 0.0)
    return Verdict(
        "leak", action, categories, score, ms(started), f"prompt overlap={overlap:.2f}"
    ), others.text


def _tone_check(text: str, shown: str) -> tuple[Verdict, str]:
    """Rude answers are withheld; overconfident ones get a disclaimer."""
    started = time.perf_counter()
    is_rude = output.rude(text)
    is_overconfident = output.overconfident(text)
    categories = (["tone:rude"] if is_rude else []) + (["tone:overconfident"] if is_overconfident else [])
    action: Action = "block" if is_rude else ("rewrite" if is_overconfident else "allow")
    if is_overconfident and not is_rude:
        shown = f"{shown.rstrip()}\n\n{output.DISCLAIMER}"
    return Verdict("tone", action, categories, 1.0 if categories else 0.0, ms(started)), shown


def _pii_check(shown: str, config: GuardConfig) -> tuple[Verdict, str]:
    started = time.perf_counter()
    redaction = pii.redact(shown, config.pii_kinds)
    categories = [f"pii:{kind}" for kind in redaction.kinds]
    action: Action = "rewrite" if categories else "allow"
    return Verdict("pii", action, categories, float(len(redaction.findings)), ms(started)), redaction.text


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
    other users (names, e-mail addresses) that must not appear in this user's answer. The
    strictest verdict decides; each check after the format one works on the text as the one
    before left it.
    """
    config = config or GuardConfig()
    began = time.perf_counter()
    verdicts: list[Verdict] = []
    shown = text
    if json_schema is not None:
        verdicts.append(_format_check(text, json_schema))
    if config.output:
        verdict, shown = _leak_check(text, shown, system_prompt, protected_terms)
        verdicts.append(verdict)
        verdict, shown = _tone_check(text, shown)
        verdicts.append(verdict)
    if config.pii:
        verdict, shown = _pii_check(shown, config)
        verdicts.append(verdict)
    categories = [c for v in verdicts for c in v.categories]
    return OutputResult(
        action=max((v.action for v in verdicts), key=ACTIONS.index, default="allow"),
        text=shown,
        categories=categories,
        scores={v.check: v.score for v in verdicts},
        verdicts=verdicts,
        reason=output_reason(categories),
        latency_ms=ms(began),
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
