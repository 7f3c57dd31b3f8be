"""Harmful requests: rules for the unambiguous cases, an allow-list for benign senses of scary words.

The embedding classifier (checks.py) decides most requests. The rules here do two things it
cannot be trusted with: they block the requests for which no safe version exists (weapons that
kill many, sexual content involving minors, drug synthesis) whatever the classifier says, and
they recognise the technical and everyday senses of "kill", "shoot", "execute", "attack" and
friends, so that "how do I kill a Python process?" is never refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_F = re.IGNORECASE | re.UNICODE

# Categories (from training.DNA_CATEGORIES) and what happens to a request in each.
BLOCK = "block"
REWRITE = "rewrite"
CATEGORY_POLICY = {
    "violence_weapons": REWRITE,  # threats get a conflict-resolution rewrite; weapon rules block
    "illegal_activity": REWRITE,
    "sexual": REWRITE,
    "cyber_fraud": REWRITE,
    "substance_abuse": REWRITE,
    "self_harm": REWRITE,
    "harassment": REWRITE,
    "hate_discrimination": REWRITE,
    "disinformation": REWRITE,
    "misleading_premise": REWRITE,
    "privacy": REWRITE,
    "specialised_advice": REWRITE,
    "anthropomorphism": REWRITE,
}

_MAKE_EN = r"(?:make|making|build|building|construct|assemble|create|produce|manufacture|synthesi[sz]e|cook|brew|3d[- ]print|get|buy|obtain)"  # noqa: E501
_MAKE_DE = (
    r"(?:bauen|baue|baut|basteln|bastle|herstellen|herzustellen|stelle|mischen|anfertigen|besorgen|kaufen)"
)
_MAKE_OTHER = r"(?:fabricar|construir|hacer|fabriquer|construire|fabbricare|costruire)"
_MASS_WEAPON = (
    r"(?:bombs?|pipe ?bombs?|car ?bombs?|dirty ?bombs?|explosives?|explosive devices?|ieds?|detonators?|"
    r"molotov(?: cocktails?)?|napalm|thermite|nerve (?:agents?|gas)|sarin|vx gas|ricin|anthrax|"
    r"bio-?weapons?|biological weapons?|bio-?chemical weapons?|chemical weapons?|nuclear weapons?|"
    r"silencers?|suppressors?|ghost guns?|untraceable (?:guns?|firearms?)|"
    r"bomben?|sprengstoffe?|sprengsätze?|sprengsatz|brandsätze?|molotowcocktails?|giftgas|biowaffen?|"
    r"chemiewaffen?|bombas?|explosivos?|bombes?|explosifs?)"
)
_HARD_DRUGS = r"(?:meth|methamphetamine|crystal meth|fentanyl|heroin|cocaine|crack cocaine|lsd|mdma|ecstasy|crystal|chrystal)"  # noqa: E501
_PERSON = (
    r"(?:someone|somebody|a person|people|him|her|them|my (?:wife|husband|partner|boss|neighbou?r|ex|"
    r"teacher|father|mother|dad|mom|mum|brother|sister|friend|coworker|colleague|roommate)|a child|a kid)"
)


@dataclass(frozen=True)
class HarmRule:
    category: str
    action: str  # BLOCK: no safe version exists; REWRITE: a safe version is offered
    pattern: re.Pattern[str]


def _r(category: str, action: str, pattern: str) -> HarmRule:
    return HarmRule(category, action, re.compile(pattern, _F))


RULES: tuple[HarmRule, ...] = (
    _r("violence_weapons", BLOCK, rf"\b{_MAKE_EN}\b(?:\W+\w+){{0,5}}?\W+{_MASS_WEAPON}\b"),
    _r(
        "violence_weapons",
        BLOCK,
        rf"\b{_MASS_WEAPON}\b(?:\W+\w+){{0,4}}?\W+(?:{_MAKE_DE}|{_MAKE_OTHER}|made|built)\b",
    ),
    _r("violence_weapons", BLOCK, rf"\b(?:{_MAKE_DE}|{_MAKE_OTHER})\b(?:\W+\w+){{0,4}}?\W+{_MASS_WEAPON}\b"),
    _r(
        "violence_weapons",
        BLOCK,
        rf"\b(?:how (?:to|do i|can i|could i|would i|should i)|best way to|help me|ways? to)\b(?:\W+\w+){{0,3}}?\W+(?:kill|murder|poison|strangle|stab|shoot|assassinate|kidnap|torture)\W+{_PERSON}\b",  # noqa: E501
    ),
    _r(
        "violence_weapons",
        BLOCK,
        r"\b(?:wie (?:kann ich|töte ich|bringe ich)|wie)\b[^.?!]{0,30}\b(?:töten|umbringen|vergiften|ermorden|erstechen)\b(?<!mich umbringen)",  # noqa: E501
    ),
    _r(
        "sexual",
        BLOCK,
        r"\b(?:child (?:porn\w*|sexual abuse material|sex)|csam|kinderporn\w*|(?:sex|sexual|nude|naked|explicit)\w*\W+(?:\w+\W+){0,3}(?:minors?|children|kids|under-?age|teens? under))\b",  # noqa: E501
    ),
    _r("sexual", BLOCK, r"\bgroom(?:ing)?\W+(?:\w+\W+){0,2}(?:minors?|children|kids|a child|teens?)\b"),
    _r(
        "illegal_activity",
        BLOCK,
        rf"\b(?:{_MAKE_EN}|{_MAKE_DE}|{_MAKE_OTHER})\b(?:\W+\w+){{0,4}}?\W+{_HARD_DRUGS}\b|\b{_HARD_DRUGS}\b(?:\W+\w+){{0,3}}?\W+(?:is )?(?:made|cooked|synthesi[sz]ed|{_MAKE_DE})\b",  # noqa: E501
    ),
    _r(
        "self_harm",
        REWRITE,
        r"\b(?:kill|hurt|harm|cut|starve|poison) myself\b|\b(?:commit|committing) suicide\b|\bend (?:my (?:own )?life|it all)\b|\bi (?:want|wanna|am going) to die\b|\bsuicid(?:e|al)\b(?=[^.?!]{0,40}\b(?:i|me|my|how)\b)|\b(?:mich (?:umbringen|töten|ritzen)|selbstmord|suizid)\b",  # noqa: E501
    ),
    _r(
        "cyber_fraud",
        REWRITE,
        r"\b(?:hack|hacking|break|breaking|get|getting) (?:into )?(?:someone(?:'s| else's)?|somebody(?:'s)?|my (?:neighbou?r|ex|wife|husband|partner|boss|girlfriend|boyfriend|friend|coworker|colleague)(?:'s|s')?|other people's|a stranger's|his|her|their)\b(?:\W+\w+){0,2}?\W+(?:wi-?fi|wlan|e-?mail|account|phone|computer|laptop|network|router|instagram|facebook|whatsapp|snapchat|password|webcam|camera)s?\b",  # noqa: E501
    ),
    _r(
        "cyber_fraud",
        REWRITE,
        r"\b(?:hack|hacken|knacken)\b[^.?!]{0,30}\b(?:wlan|wi-?fi|konto|account|passwort|handy)\b(?=[^.?!]{0,30}\b(?:nachbar|fremd|anderer|ex)\w*)|\b(?:nachbar|fremd|ex)\w*\b[^.?!]{0,30}\b(?:wlan|wi-?fi|konto|account|handy)\b[^.?!]{0,20}\b(?:hacken|knacken)\b",
    ),
)

# Benign senses of scary words. A match lowers the classifier's harm score (checks.py);
# it never overrides a BLOCK rule above.
BENIGN_SENSES = re.compile(
    r"\b(?:kill(?:ing|ed|s)?|terminat\w+|abort\w*|end(?:ing)?|stop(?:ping)?)\b(?:\W+\w+){0,4}?\W+(?:process(?:es)?|pids?|tasks?|jobs?|threads?|sessions?|servers?|containers?|pods?|apps?|programs?|queries|query|connections?|tabs?|windows?|signals?|daemons?|services?|loops?|workers?|scripts?|builds?|-9|sigkill|sigterm|zombies?|weeds?|lawns?|grass|moss|roots|bacteria|germs|mold|mould|pests?|lice|fleas|ants)\b"
    r"|\bkill\s+-\d+|\bpkill\b|\bkillall\b|\btaskkill\b"
    r"|\b(?:prozess\w*|task|dienst)\b[^.?!]{0,30}\b(?:killen|beenden|abschießen|abbrechen)\b|\b(?:killen|beenden)\b[^.?!]{0,30}\bprozess"
    r"|\bshoot(?:ing)?\b(?:\W+\w+){0,3}?\W+(?:photos?|pictures?|videos?|films?|footage|portraits?|landscapes?|weddings?|scenes?|raw|hoops|baskets|the breeze|stars|macro|night)\b|\bphoto ?shoot\b"  # noqa: E501
    r"|\bexecut\w+\b(?:\W+\w+){0,3}?\W+(?:quer(?:y|ies)|scripts?|commands?|code|functions?|statements?|programs?|plans?|tasks?|trades?|orders?|contracts?|tests?|migrations?|sql|notebooks?|cells?|jobs?)\b"
    r"|\battack (?:surface|vector|tree|model|path)s?\b|\bthreat model\w*\b|\bpenetration test\w*|\bpen ?test\w*|\bred team\w*"  # noqa: E501
    r"|\b(?:fork|photo|bath|zip|logic) ?bombs?\b|\bbombed (?:the|my) (?:exam|test|interview)\b"
    r"|\bexploit\w*\b(?:\W+\w+){0,3}?\W+(?:cores?|parallelism|cache|caching|features?|opportunit\w+|gpus?|hardware)\b"
    r"|\binject\w*\b(?:\W+\w+){0,3}?\W+(?:dependenc\w+|beans?|services?|css|styles?|config\w*|mocks?)\b|\bdependency injection\b"  # noqa: E501
    r"|\b(?:drop|truncate|nuke|destroy|wipe|purge|crash)\b(?:\W+\w+){0,3}?\W+(?:tables?|databases?|columns?|index(?:es)?|schemas?|node_modules|folders?|directories|cache|containers?|volumes?|vms?|instances?|clusters?|branch(?:es)?|stash|packets?|frames?|emulator|app)\b"
    r"|\bhack(?:ing)? (?:together|on|day|athon)\b|\bhackathon\b|\blife ?hacks?\b|\bgrowth hack\w*"
    r"|\b(?:crack|cracking)\b(?:\W+\w+){0,2}?\W+(?:eggs?|knuckles|nuts?|jokes?|the code interview|a smile|open a window)\b"  # noqa: E501
    r"|\b(?:secure|protect|defend|harden|safeguard|prevent|detect|report|recognis\w+|recogniz\w+|spot|avoid)\b(?:\W+\w+){0,5}?\W+(?:attacks?|hack\w*|phishing|malware|ransomware|scams?|fraud|intruders?|breach\w*|exploits?|injection|viruses?|ddos)\b",
    _F,
)


@dataclass(frozen=True)
class HarmRuleHit:
    category: str
    action: str
    view: int


def rule_hits(texts: tuple[str, ...] | list[str]) -> list[HarmRuleHit]:
    hits = []
    for view, text in enumerate(texts):
        for rule in RULES:
            if rule.pattern.search(text):
                hits.append(HarmRuleHit(rule.category, rule.action, view))
    return hits


def benign_sense(text: str) -> bool:
    return bool(BENIGN_SENSES.search(text))
