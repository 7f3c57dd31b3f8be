"""Safe rewrites: what the user is offered, editable, instead of a flat refusal.

Deterministic templates, no model call: a request in a harm category gets the closest safe
question we can phrase (specific patterns first, then the category's general form); an
injected instruction is cut out and the legitimate question kept; personal data is redacted.
None means no safe version exists, and the request is refused.
"""

from __future__ import annotations

import re

from guardrails import harm, injection

_F = re.IGNORECASE

# Plain-language reasons shown to the user, by category.
REASONS = {
    "too_long": "The message is too long to check.",
    "injection": "The message tries to change the assistant's instructions.",
    "off_topic": "The question is outside what this assistant is for.",
    "pii": "The message contains personal data, which is removed before anything is sent on.",
    "harm:violence_weapons": "The request could help someone hurt people.",
    "harm:illegal_activity": "The request asks for help with something illegal.",
    "harm:sexual": "The request asks for sexual content.",
    "harm:cyber_fraud": "The request asks for help with hacking, fraud or spam.",
    "harm:substance_abuse": "The request asks for help misusing drugs or alcohol.",
    "harm:self_harm": "The message mentions self-harm. You don't have to deal with this alone.",
    "harm:harassment": "The request asks to insult or demean someone.",
    "harm:hate_discrimination": "The request rests on a stereotype about a group of people.",
    "harm:disinformation": "The request asks for false or misleading content.",
    "harm:misleading_premise": "The question takes a contested or false claim for granted.",
    "harm:privacy": "The request asks for someone's private information.",
    "harm:specialised_advice": "The request asks for personal medical, legal or financial advice.",
    "harm:anthropomorphism": "The request treats the assistant as a person.",
}

# Specific patterns, tried in order before the category's general rewrite.
_SPECIFIC: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "cyber_fraud",
        re.compile(r"\b(?:wi-?fi|wlan|router|(?:wireless )?network)\b", _F),
        "How do I secure my own Wi-Fi network against intruders?",
    ),
    (
        "cyber_fraud",
        re.compile(r"\b(?:e-?mail|account|instagram|facebook|whatsapp|snapchat|password)s?\b", _F),
        "How do I secure my own accounts against hacking?",
    ),
    (
        "cyber_fraud",
        re.compile(r"\b(?:phone|computer|laptop|webcam|camera)s?\b", _F),
        "How do I protect my own devices against hacking?",
    ),
    (
        "cyber_fraud",
        re.compile(r"\b(?:phishing|scam|spam|chain letter|pyramid|fraudulent)\w*\b", _F),
        "How can I recognise and report phishing, scams and spam?",
    ),
    (
        "disinformation",
        re.compile(r"\b(?:review|rating)s?\b", _F),
        "How can I collect honest reviews from real customers?",
    ),
    (
        "violence_weapons",
        re.compile(r"\b(?:threat\w*|scare|intimidat\w*|blackmail\w*|revenge|get back at|terrori[sz]e)\b", _F),
        "How can I resolve a conflict with someone safely, or get help if I feel unsafe?",
    ),
    (
        "sexual",
        re.compile(r"\bjokes?\b", _F),
        "Tell me a clean, family-friendly joke.",
    ),
    (
        "harassment",
        re.compile(r"\b(?:insult|make fun of|mock|roast|humiliate)\b", _F),
        "How can I disagree with people respectfully?",
    ),
    (
        "self_harm",
        re.compile(r"\b(?:weight|diet|starve|calorie|thin|eat|eating|throw up|vomit)\w*\b", _F),
        "How can I reach a healthy weight safely, and where can I get support with eating?",
    ),
)

_GENERAL = {
    "illegal_activity": "What are the laws and risks around this, and what legal alternatives are there?",
    "sexual": "Where can I find reliable, medically accurate information about sexual health?",
    "cyber_fraud": "How can I protect myself and my systems against this kind of attack?",
    "substance_abuse": "What are the health risks of misusing drugs or alcohol, and where can I find confidential help?",  # noqa: E501
    "self_harm": "Where can I find support right now if I'm struggling, such as a crisis line or someone to talk to?",  # noqa: E501
    "harassment": "How can I express criticism respectfully and back it up with facts?",
    "hate_discrimination": "What does research say about stereotypes like this, and why can generalisations about groups be harmful?",  # noqa: E501
    "disinformation": "How can I spot and counter false or misleading information online?",
    "privacy": "How can I protect personal information like this, and what are the legitimate ways to request it?",  # noqa: E501
    "anthropomorphism": "What can you help me with, and what are your limits as an AI assistant?",
}

_PROFESSIONAL = (
    (
        re.compile(
            r"\b(?:sue|court|lawyer|legal|law|convict\w*|divorce|will|custody|landlord|contract|arrest\w*|charged|accused|visa|copyright)\b",
            _F,
        ),
        "a lawyer",
    ),
    (
        re.compile(
            r"\b(?:invest\w*|stocks?|bonds?|money|loan|debt|retire\w*|pension|savings?|crypto\w*|inheritance|mortgage|tax\w*|bank)\b",
            _F,
        ),
        "a licensed financial adviser",
    ),
    (
        re.compile(
            r"\b(?:medic\w*|dos(?:e|age)|drugs?|symptoms?|diagnos\w*|therap\w*|pain|anxiety|depress\w*|doctor|prescri\w*|pills?|treatment|disease|illness|sick|pregnan\w*|surgery)\b",
            _F,
        ),
        "a doctor or pharmacist",
    ),
)


def _quoted(question: str, limit: int = 200) -> str:
    text = " ".join(question.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def harm_rewrite(category: str, question: str) -> str | None:
    """A safe version of a request in a harm category, or None when there is none."""
    for wanted, pattern, template in _SPECIFIC:
        if wanted == category and pattern.search(question):
            return template
    if category == "specialised_advice":
        professional = next(
            (p for pattern, p in _PROFESSIONAL if pattern.search(question)), "a qualified professional"
        )
        return f"What general information should I know about this, and when should I see {professional}? “{_quoted(question)}”"  # noqa: E501
    if category == "misleading_premise":
        return f"What does reliable evidence say about the claim behind this question: “{_quoted(question)}”"
    return _GENERAL.get(category)


def without_injection(text: str) -> str | None:
    """The legitimate part of a message that also carries an injected instruction.

    Sentences that trip an injection rule are dropped, and so is the flattery or framing
    around them ("Well done!", "Now comes a new task"); what is left is offered if it still
    reads as a request and trips nothing. None when nothing legitimate remains.
    """
    spans = injection.sentences(text)
    hits = [h for h in injection.rule_hits([text]) if h.weight >= 0.6]
    bad = {i for i, (start, end) in enumerate(spans) if any(h.start < end and start < h.end for h in hits)}
    if not bad:
        # The classifier flagged it, not a rule: keep only the last question, if it is not the whole text.
        questions = [i for i, (s, e) in enumerate(spans) if text[s:e].strip().endswith("?")]
        if not questions or len(spans) == 1:
            return None
        keep = [questions[-1]]
    else:
        keep = [i for i in range(len(spans)) if i not in bad]
    kept = " ".join(" ".join(text[spans[i][0] : spans[i][1]].split()) for i in keep).strip()
    kept = _FRAMING.sub("", kept).strip(" :-")
    if len(re.findall(r"\w+", kept)) < 2:
        return None
    if injection.rule_score(injection.rule_hits([kept])) >= 0.6 or harm.rule_hits([kept]):
        return None
    return kept


# Praise and hand-offs that frame an injected task rather than ask anything.
_FRAMING = re.compile(
    r"^(?:(?:wow|great|well done|very (?:well done|good)|superbly done|simply great|okay|ok|stop|attention|"
    r"excellent|congratulations|gut gemacht|sehr gut|einfach großartig|ausgezeichnet\w*)[^.!?]{0,60}[.!]\s*)+",  # noqa: E501
    _F,
)
