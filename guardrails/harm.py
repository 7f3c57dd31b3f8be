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

# Requests whose wording carries the harmful intent whatever the topic: hiding the act from the
# people it is done to, other people's private data, fabricated content, incapacitating someone.
# They catch what the embedding classifier misses (it mostly learns topics), in English and
# Chinese (Traditional and Simplified); a safe rewrite is offered, as for the classifier's flags.
_OTHER_PERSON_EN = (
    r"(?:(?:my|our|his|her|their) (?:coworker|co-worker|colleague|neighbou?r|ex|boss|classmate|teacher|landlord|"  # noqa: E501
    r"tenant|girlfriend|boyfriend|wife|husband|partner|sister|brother|friend|roommate|employee)s?(?:'s|s')?|"
    r"someone(?: else)?'s|somebody's|a stranger's|other people's|the (?:girl|guy|woman|man) i met|"
    r"(?-i:[A-Z][a-z]+ [A-Z][a-z]+'s))"
)
_PRIVATE_DATA_EN = (
    r"(?:home address|e-?mail address|phone number|cell(?:phone)? number|mobile number|bank account(?: number)?|"  # noqa: E501
    r"social security number|ssn|passport number|credit card (?:number|details)|medical records?|medications?|"  # noqa: E501
    r"password|salary|date of birth|location)"
)
_OTHER_PERSON_ZH = r"(?:同事|鄰居|邻居|前任|前男友|前女友|老闆|老板|主管|領導|领导|同學|同学|陌生人|別人|别人|他人|女朋友|男朋友|老婆|老公)"  # noqa: E501
_GROUPS_EN = (
    r"(?:jews|jewish people|muslims|christians|blacks|black people|whites|white people|asians|immigrants|"
    r"refugees|mexicans|africans|arabs|indians|chinese people|women|gays|gay people|trans people)"
)
INTENT_RULES: tuple[HarmRule, ...] = (
    _r(
        "illegal_activity",
        REWRITE,
        r"\b(?:without|so that|so)\b(?:\W+(?:anyone|anybody|them|him|her|my \w+|the (?:police|owners?|cops|bank|tax office|authorities|victim)))?\W+(?:(?:ever )?(?:knowing|noticing|finding out|being (?:caught|detected|noticed|traced)|getting (?:caught|detected|noticed|audited|traced))|(?:they|he|she|it|anyone) (?:notices?|finds? out|knows?|suspects?))\b"  # noqa: E501
        r"|不(?:會|会)?被(?:發現|发现|抓到|察覺|察觉|查到|追蹤|追踪)|神不知鬼不覺|神不知鬼不觉|偷偷(?:地)?(?:在|把|進|进|裝|装|看|拿|拍)",
    ),
    _r(
        "privacy",
        REWRITE,
        rf"{_OTHER_PERSON_EN}\s+(?:\w+\s+){{0,2}}{_PRIVATE_DATA_EN}\b|\b{_PRIVATE_DATA_EN} of {_OTHER_PERSON_EN[:-1]}|(?:my|our) (?:coworker|colleague|neighbou?r|ex|boss|classmate))\b"  # noqa: E501
        rf"|{_OTHER_PERSON_ZH}[^。？！?]{{0,12}}?(?:住址|地址|住在哪|電話|电话|手機號|手机号|銀行帳號|银行账号|身分證|身份证|密碼|密码|病歷|病历|薪水)",  # noqa: E501
    ),
    _r(
        "disinformation",
        REWRITE,
        r"\b(?:write|create|generate|make up|fabricate|produce|post)\b(?:\W+\w+){0,4}?\W+(?:fake|false|fabricated|made-up|bogus)\W+(?:\w+\W+){0,2}?(?:reviews?|news|articles?|quotes?|testimonials?|statistics|studies|posts?|tweets?)\b"  # noqa: E501
        r"|(?:寫|写|編|编|捏造|製造|制造)[^。？！?]{0,8}?(?:假新聞|假新闻|假評論|假评论|假好評|假好评|假裝是|假装是)",
    ),
    _r(
        "illegal_activity",
        REWRITE,
        r"\b(?:buy|get|obtain|order|make)\b(?:\W+\w+){0,3}?\W+(?:fake|forged|counterfeit)\W+(?:passports?|ids?|id cards?|diplomas?|degrees?|driver'?s licen[cs]es?|banknotes?|money|prescriptions?)\b"  # noqa: E501
        r"|\b(?:get|buy|obtain|order)\b(?:\W+\w+){0,4}?\W+without (?:a |any )?prescription\b"
        r"|(?:買|买|弄到|辦|办|做)[^。？！?]{0,6}?(?:假護照|假护照|假證件|假证件|假鈔|假钞)"
        r"|(?:怎麼|怎么|如何|幫我|帮我)[^。？！?]{0,6}?(?:偽造|伪造)"
        r"|(?:沒有|没有|不用|無|无)(?:處方|处方)[^。？！?]{0,8}?(?:弄到|買|买|拿到|取得|獲得|获得)"
        r"|(?:闖進|闯进|闖入|闯入|潛入|潜入)[^。？！?]{0,6}?(?:家|房子|屋|公寓)",
    ),
    _r(
        "substance_abuse",
        REWRITE,
        r"\b(?:make|get) (?:her|him|them|my \w+|someone|a girl|a guy) (?:to )?(?:pass out|black out|unconscious|blackout drunk)\b"  # noqa: E501
        r"|(?:昏過去|昏过去|昏迷|失去意識|失去意识|不省人事)",
    ),
    _r(
        "hate_discrimination",
        REWRITE,
        rf"\bwhy (?:are|do|is it that) (?:all |most )?{_GROUPS_EN}\b(?:\W+\w+){{0,3}}?\W+(?:less intelligent|stupid|lazy|inferior|dangerous|criminals?|greedy|violent|dirty|evil)\b"  # noqa: E501
        rf"|\b{_GROUPS_EN} (?:control|run|own) (?:the )?(?:banks|media|world|government)\b"
        r"|(?:非洲人|非洲移民|黑人|穆斯林|回教徒|猶太人|犹太人|移民|女人|同性戀|同性恋)[^。？！?]{0,6}?(?:比較|比较|都|就是)?(?:不聰明|不聪明|愚蠢|懶惰|懒惰|低等|危險|危险|骯髒|肮脏)",  # noqa: E501
    ),
    _r(
        "self_harm",
        REWRITE,
        r"我[^。？！?]{0,8}?(?:自殺|自杀)|(?:自殺|自杀)[^。？！?]{0,6}?(?:最不痛苦|最快|最有效)|(?:結束|结束)我(?:自己)?的生命",  # noqa: E501
    ),
    _r(
        "violence_weapons",
        BLOCK,
        r"(?:毒死|殺死|杀死|殺掉|杀掉|弄死|刺死|打死|害死)(?:我的|我)?(?:鄰居|邻居|老公|老婆|丈夫|妻子|同事|老闆|老板|同學|同学|前任|他|她|人|別人|别人)",  # noqa: E501
    ),
    _r(
        "violence_weapons",
        REWRITE,
        r"(?:毒死|殺死|杀死|殺掉|杀掉|弄死|打死|虐待)[^。？！?]{0,4}?(?:狗|貓|猫|動物|动物)|(?:恐嚇|恐吓|威脅|威胁)(?:信|訊息|信息|簡訊|短信)",
    ),
    _r(
        "cyber_fraud",
        REWRITE,
        rf"(?:駭進|黑进|駭入|黑入|入侵|破解|盜用|盗用)[^。？！?]{{0,4}}?{_OTHER_PERSON_ZH}[^。？！?]{{0,10}}?(?:帳號|账号|帐号|信箱|郵件|邮件|手機|手机|電腦|电脑|wifi|網路|网络|密碼|密码)|(?:勒索軟體|勒索软件|鍵盤側錄|键盘记录|釣魚郵件|钓鱼邮件)",  # noqa: E501
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
    r"|\b(?:secure|protect|defend|harden|safeguard|prevent|detect|report|recognis\w+|recogniz\w+|spot|avoid|tackle|respond to|deal with|cope with)\b(?:\W+\w+){0,5}?\W+(?:attacks?|hack\w*|phishing|malware|ransomware|scams?|fraud|intruders?|breach\w*|exploits?|injection|viruses?|ddos|(?:cyber)?bully\w*|harass\w*|stalk\w*|counterfeit\w*|launder\w*|theft|stolen)\b"  # noqa: E501
    # Licences, copyright and patents: legal information, the demo knowledge's own subject.
    r"|(?<!driver's )(?<!driving )(?<!drivers )\b(?:licen[cs](?:e|es|ed|ing)|sublicens\w+|relicens\w+|GPL(?:-?v?[23])?|LGPL|AGPL|MPL(?:[- ]?2(?:\.0)?)?|BSD|Apache License|copyleft|open[- ]source|copyrights?|patents?|trademarks?)\b"  # noqa: E501
    # Chinese: ending a process or running a query, licences, and guarding against an attack.
    r"|(?:殺掉|殺死|杀掉|杀死|終止|终止|結束|结束|強制刪除|强制删除|砍掉)[^。？！?]{0,20}?(?:程序|程式|進程|进程|行程|執行緒|线程|服務|服务|容器|pod|任務|任务)"  # noqa: E501
    r"|(?:程序|程式|進程|进程|容器|pod)[^。？！?]{0,12}?(?:殺掉|殺死|杀掉|杀死|終止|终止|強制刪除|强制删除)"
    r"|(?:執行|执行|運行|运行)[^。？！?]{0,8}?(?:sql|預存程序|存储过程|指令|命令|腳本|脚本|查詢|查询)"
    r"|授權|授权|許可證|许可证|著作權|著作权|版權|版权|專利|专利|開源|开源"
    r"|(?:檢舉|舉報|举报|防範|防范|辨認|辨识|識別|识别|預防|预防|偵測|检测|保護|保护)[^。？！?]{0,12}?(?:詐騙|诈骗|霸凌|釣魚|钓鱼|駭客|黑客|攻擊|攻击|病毒|勒索)"  # noqa: E501
    r"|(?:詐騙|诈骗|霸凌|釣魚|钓鱼|攻擊|攻击)[^。！]{0,20}?(?:防範|防范|辨認|辨识|識別|识别|檢舉|舉報|举报|減輕|缓解|預防|预防)",  # noqa: E501
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
        for rule in (*RULES, *INTENT_RULES):
            if rule.pattern.search(text):
                hits.append(HarmRuleHit(rule.category, rule.action, view))
    return hits


def benign_sense(text: str) -> bool:
    return bool(BENIGN_SENSES.search(text))


# A question about the past of someone named in a record ("Who was Margaret's husband?", "What
# was the name of Tancred's nephew?") asks what a document says, not for a private person's data:
# the privacy requests to refuse name the asker's own circle ("my co-worker", "my patient") or
# data nobody publishes (an address, grades, a password).
_RECORD_QUESTION = re.compile(
    r"^\W*(?:who|what|when|where|which|whose|how)\b(?:\W+\w+){0,4}?\W+(?:was|were|did|had)\b"
    r"|^[^。？?]*(?:哪|何|什麼|什么|誰|谁)[^。？?]*(?:年|時|时|位|人|家|間|间)",
    re.IGNORECASE,
)
_PERSONAL_CIRCLE = re.compile(
    r"\b(?:my|our|me|us|i|you|your|his own|her own)\b"
    r"|\b(?:address|phone|e-?mail|password|social security|ssn|salary|medical|diagnos\w*|grades?|bank"
    r"|account|location|whereabouts|lives?|living|born on|date of birth|birthday)\b"
    r"|我|你|您|地址|電話|电话|密碼|密码|病歷|病历|薪水|薪資|成績|成绩|身分證|身份证|住在|住址",
    re.IGNORECASE,
)


def record_question(text: str) -> bool:
    """A question about what a record says of someone in the past, not about a private person's data."""
    return bool(_RECORD_QUESTION.search(text)) and not _PERSONAL_CIRCLE.search(text)
