"""Safe rewrites: what the user is offered, editable, instead of a flat refusal.

Deterministic templates, no model call: a request in a harm category gets its category's safe
question with the request's own subject in it ("What does general guidance say about <the
subject>…"), in English or in Chinese (Traditional or Simplified, as asked); an injected
instruction is cut out and the legitimate question kept; personal data is redacted. None means
no safe version exists, and the request is refused.
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

# Shown with an answer to a question the harm classifier alone found sensitive but the checks
# let through (the knowledge base matches it well): the person learns the answer keeps to the
# documents, instead of being refused.
NOTICES = {
    "harm:privacy": "This question may concern personal information: the answer keeps to what your documents say.",  # noqa: E501
    "harm:specialised_advice": "General information from your documents, not personal medical, legal or financial advice.",  # noqa: E501
}
DEFAULT_NOTICE = "A safety check found this question sensitive: the answer keeps to what your documents say."


def notice_for(categories: list[str]) -> str:
    """The notice shown with an answer to a question let through despite these flags."""
    return " ".join(dict.fromkeys(NOTICES.get(c, DEFAULT_NOTICE) for c in categories))


# --- the question's subject ---------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


# Words that frame a request rather than name its subject: question words, auxiliaries, pronouns,
# determiners, prepositions and the verbs of asking. Whatever is left names what was asked about.
_FRAME_WORDS = frozenset(
    _words(
        """
        a an the this that these those some any all every each other another such own
        i me my mine myself we us our ours ourselves you your yours yourself he him his she her
        hers it its they them their theirs someone somebody anyone anybody everyone people person one
        what which who whom whose when where why how whether if then than so because as while
        is are was were be been being am do does did done doing have has had having
        can could shall should will would may might must need ought
        not no nor never only just also too very really quite more most less least much many
        to of in on at by for from with without about into onto over under between through
        during before after above below up down out off again further there here and or but
        please tell give show explain describe write make get let know want wanna like
        help find say says said use using used way ways best good easy easiest fast fastest
        possible anything something everything thing things stuff
        """
    )
)
# Verbs and words that carry the harmful intent: dropped from the subject, so a rewrite asks
# about the thing, not about doing the harm to it.
_HARM_WORDS = re.compile(
    r"^(?:kill\w*|murder\w*|poison\w*|stab|stabs|stabb\w*|shoot\w*|strangl\w*|hurt\w*|harm|harms|harmed|harming|harmful|attack\w*|"
    r"assault\w*|beat|beating|threaten\w*|scare|scaring|intimidat\w*|blackmail\w*|torture\w*|"
    r"kidnap\w*|steal\w*|stole|rob|robs|robb\w*|shoplift\w*|burgl\w*|break|breaking|forg(?:e|ed|es|ing|ery|eries)|fake|fraud\w*|"
    r"launder\w*|smuggl\w*|evad\w*|evasion|hack\w*|crack\w*|spy|spying|stalk\w*|phish\w*|"
    r"insult\w*|humiliat\w*|mock\w*|bully\w*|hate|hating|abuse\w*|secretly|caught|unnoticed|"
    r"undetected|illegally|anonymously|untraceable|finding|calling|fat|ugly|loser|stupid|idiot\w*|dumb|worthless)$",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[^\W_](?:[\w'’.-]*[^\W_])?", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
MAX_TOPIC_WORDS = 8
MAX_TOPIC_CHARS = 60

# Chinese: framing phrases cut from the start and end of a clause (longest first), and words
# carrying the harmful intent, cut anywhere. Both scripts.
_ZH_LEADING = sorted(
    _words(
        """
        請問 请问 請 请 幫我 帮我 幫忙 帮忙 告訴我 告诉我 我想知道 我想問 我想问 你能 你可以 可不可以 可以
        能不能 能否 是否 我的 的 如何 怎麼樣 怎么样 怎麼 怎么 怎樣 怎样 為什麼 为什么 為何 为何 到底 究竟
        要 我要 我該 我该 我應該 我应该 我 用什麼方法 用什么方法 有什麼方法 有什么方法 什麼 什么
        哪裡 哪里 哪些 哪個 哪个 誰 谁 在 給我 给我 寫 写 一個 一个 一封 一篇 一則 一条 關於 关于
        """
    ),
    key=len,
    reverse=True,
)
_ZH_TRAILING = sorted(
    _words(
        """
        嗎 吗 呢 吧 啊 呀 嘛 是什麼 是什么 是多少 有哪些 有什麼 有什么 怎麼說 怎么说 怎麼辦 怎么办
        合法嗎 合法吗 是誰 是谁 在哪裡 在哪里 哪裡 哪里 什麼 什么 多少 如何 怎麼 怎么 的 了
        """
    ),
    key=len,
    reverse=True,
)
_ZH_HARM = re.compile(
    r"殺死|杀死|殺掉|杀掉|毒死|弄死|刺死|打死|殺|杀|偷偷|偷|搶|抢|駭進|黑进|駭入|黑入|偽造|伪造|洗白|"
    r"自殺|自杀|而?不被(?:發現|发现|抓到)|而不"
)
_ZH_CLAUSE = re.compile(r"[，。？！；、,?!;：:]+|[.](?!\d)")
# Characters that exist only in one of the two scripts, for choosing the reply's script.
_TRADITIONAL = set(
    "們個這說麼為會時來對學國過還後與關從樣點問題裡電話網給讓號帳戶錢買賣錄資訊護權條規療藥醫險傷殺開發"
    "體軟腦碼員車長見應該嗎聽寫經實東區動業產專歲記認識讀書無務氣錯覺現進邊運達選鄰聯齊"
)
_SIMPLIFIED = set(
    "们个这说么为会时来对学国过还后与关从样点问题里电话网给让号账户钱买卖录资讯护权条规疗药医险伤杀开发"
    "体软脑码员车长见应该吗听写经实东区动业产专岁记认识读书无务气错觉现进边运达选邻联齐"
)


def language(text: str) -> str:
    """'zh-Hant', 'zh-Hans' or 'en' (everything not Chinese gets English templates)."""
    cjk = len(_CJK.findall(text))
    letters = sum(1 for c in text if c.isalpha())
    if not cjk or cjk < 0.3 * letters:
        return "en"
    simplified = sum(1 for c in text if c in _SIMPLIFIED)
    traditional = sum(1 for c in text if c in _TRADITIONAL)
    return "zh-Hans" if simplified > traditional else "zh-Hant"


def subject(question: str) -> str:
    """What the question is about, from its own words: deterministic, no model call.

    English (and other space-separated languages): the content words, in order, without the
    framing (question words, pronouns, auxiliaries) or the words that carry a harmful intent
    ("kill", "hack", "steal"). Chinese: the first clause that keeps something once framing
    phrases and harmful verbs are cut. Empty when nothing is left.
    """
    text = " ".join(question.split())
    if language(text) != "en":
        return _subject_zh(text)
    words = []
    for match in _WORD_RE.finditer(text):
        word = match.group(0).strip("'’.-")
        bare = re.sub(r"(?:'s|’s|s')$", "", word.lower())
        if not word or bare in _FRAME_WORDS or word.lower() in _FRAME_WORDS or _HARM_WORDS.match(bare):
            continue
        words.append(word)
    kept = " ".join(words[:MAX_TOPIC_WORDS])
    return kept[:MAX_TOPIC_CHARS].rsplit(" ", 1)[0] if len(kept) > MAX_TOPIC_CHARS else kept


def _subject_zh(text: str) -> str:
    for clause in _ZH_CLAUSE.split(text):
        clause = _ZH_HARM.sub("", clause)
        changed = True
        while changed and clause:
            changed = False
            for phrase in _ZH_LEADING:
                if clause.startswith(phrase) and len(clause) > len(phrase):
                    clause, changed = clause[len(phrase) :], True
                    break
            for phrase in _ZH_TRAILING:
                if clause.endswith(phrase) and len(clause) > len(phrase):
                    clause, changed = clause[: -len(phrase)], True
                    break
        clause = clause.strip()
        if len(_CJK.findall(clause)) + len(re.findall(r"[A-Za-z0-9]+", clause)) >= 2:
            return clause[:30]
    return ""


def content_words(text: str) -> set[str]:
    """Lower-cased content words (English) or character pairs (Chinese), to compare topics."""
    if language(text) != "en":
        han = "".join(_CJK.findall(text))
        latin = {w.lower() for w in re.findall(r"[A-Za-z0-9]{2,}", text)}
        return {han[i : i + 2] for i in range(len(han) - 1)} | latin
    out = set()
    for match in _WORD_RE.finditer(text):
        word = re.sub(r"(?:'s|’s|s')$", "", match.group(0).lower()).replace("-", "")
        if word not in _FRAME_WORDS and len(word) > 1:
            out.add(word[:-1] if word.endswith("s") and len(word) > 3 else word)
    return out


# --- templates -----------------------------------------------------------------------------------

# Each template names the subject ({topic}); a category without one here has no safe version.
_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "violence_weapons": "How can a conflict involving {topic} be resolved safely, and where can I get help if I feel unsafe?",  # noqa: E501
        "illegal_activity": "What do the law and official guidance say about {topic}, and what legal options are there?",  # noqa: E501
        "sexual": "Where can I find reliable, medically accurate information about {topic}?",
        "cyber_fraud": "How can {topic} be protected against hacking, fraud and scams?",
        "substance_abuse": "What are the health risks around {topic}, and where can I find confidential help?",  # noqa: E501
        "self_harm": "Where can I find support right now with {topic}, such as a crisis line or someone to talk to?",  # noqa: E501
        "harassment": "How can I raise my concerns about {topic} respectfully and back them up with facts?",  # noqa: E501
        "hate_discrimination": "What does research say about {topic}, and why can generalisations about groups be harmful?",  # noqa: E501
        "disinformation": "What does reliable evidence say about {topic}, and how can I spot false claims about it?",  # noqa: E501
        "misleading_premise": "What does reliable evidence say about {topic}?",
        "privacy": "What is publicly documented about {topic}, and how is personal information like this protected?",  # noqa: E501
        "specialised_advice": "What does general guidance say about {topic}, and when should I see {professional}?",  # noqa: E501
        "anthropomorphism": "What can you tell me about {topic}, and what are your limits as an AI assistant?",  # noqa: E501
    },
    "zh-Hant": {
        "violence_weapons": "關於「{topic}」的衝突，要怎麼安全地化解？覺得不安全時可以向哪裡求助？",
        "illegal_activity": "關於「{topic}」，法律和官方指引怎麼規定？有哪些合法的做法？",
        "sexual": "關於「{topic}」，哪裡有可靠、醫學上正確的資訊？",
        "cyber_fraud": "「{topic}」要怎麼防範駭客、詐騙和網路攻擊？",
        "substance_abuse": "「{topic}」有哪些健康風險？哪裡可以得到保密的協助？",
        "self_harm": "關於「{topic}」，現在可以向哪裡求助，例如安心專線或可以談話的人？",
        "harassment": "關於「{topic}」，要怎麼以尊重的方式表達意見，並用事實支持？",
        "hate_discrimination": "關於「{topic}」，研究怎麼說？為什麼對群體一概而論可能造成傷害？",
        "disinformation": "關於「{topic}」，可靠的證據怎麼說？要怎麼辨識不實說法？",
        "misleading_premise": "關於「{topic}」，可靠的證據怎麼說？",
        "privacy": "關於「{topic}」，有哪些公開的資料？這類個人資料要怎麼保護？",
        "specialised_advice": "關於「{topic}」，一般性的資訊怎麼說？什麼情況下應該諮詢{professional}？",
        "anthropomorphism": "關於「{topic}」，你能告訴我什麼？身為 AI 助理你有哪些限制？",
    },
    "zh-Hans": {
        "violence_weapons": "关于「{topic}」的冲突，要怎么安全地化解？觉得不安全时可以向哪里求助？",
        "illegal_activity": "关于「{topic}」，法律和官方指引怎么规定？有哪些合法的做法？",
        "sexual": "关于「{topic}」，哪里有可靠、医学上正确的信息？",
        "cyber_fraud": "「{topic}」要怎么防范黑客、诈骗和网络攻击？",
        "substance_abuse": "「{topic}」有哪些健康风险？哪里可以得到保密的帮助？",
        "self_harm": "关于「{topic}」，现在可以向哪里求助，例如心理援助热线或可以倾诉的人？",
        "harassment": "关于「{topic}」，要怎么以尊重的方式表达意见，并用事实支持？",
        "hate_discrimination": "关于「{topic}」，研究怎么说？为什么对群体一概而论可能造成伤害？",
        "disinformation": "关于「{topic}」，可靠的证据怎么说？要怎么识别不实说法？",
        "misleading_premise": "关于「{topic}」，可靠的证据怎么说？",
        "privacy": "关于「{topic}」，有哪些公开的资料？这类个人信息要怎么保护？",
        "specialised_advice": "关于「{topic}」，一般性的信息怎么说？什么情况下应该咨询{professional}？",
        "anthropomorphism": "关于「{topic}」，你能告诉我什么？作为 AI 助手你有哪些限制？",
    },
}
# When nothing of the subject survives (a question that is all framing), the template reads
# with this instead: the rewrite is then as general as the question.
_NO_TOPIC = {"en": "this", "zh-Hant": "這個問題", "zh-Hans": "这个问题"}

_PROFESSIONAL = (
    (
        re.compile(
            r"\b(?:sue|court|judge|lawyer|legal|law|convict\w*|divorce|will|custody|landlord|tenant|contract|arrest\w*|charged|accused|visa|copyright|licen[cs]e\w*|jail|dui)\b|法律|律師|律师|法院|合約|合同|授權|许可",  # noqa: E501
            _F,
        ),
        {"en": "a lawyer", "zh-Hant": "律師", "zh-Hans": "律师"},
    ),
    (
        re.compile(
            r"\b(?:invest\w*|stocks?|bonds?|money|loan|debt|retire\w*|pension|savings?|crypto\w*|inheritance|mortgage|tax\w*|bank)\b|投資|投资|股票|基金|貸款|贷款|稅|税|退休|存款",  # noqa: E501
            _F,
        ),
        {"en": "a licensed financial adviser", "zh-Hant": "合格的理財顧問", "zh-Hans": "合格的理财顾问"},
    ),
    (
        re.compile(
            r"\b(?:medic\w*|dos(?:e|age)|drugs?|symptoms?|diagnos\w*|therap\w*|pain|anxiety|depress\w*|antidepress\w*|doctor|prescri\w*|pills?|treatment|disease|illness|sick|pregnan\w*|surgery|cancer)\b|藥|药|症狀|症状|醫|医|病|痛|懷孕|怀孕",  # noqa: E501
            _F,
        ),
        {"en": "a doctor or pharmacist", "zh-Hant": "醫師或藥師", "zh-Hans": "医生或药师"},
    ),
)
_ANY_PROFESSIONAL = {"en": "a qualified professional", "zh-Hant": "專業人士", "zh-Hans": "专业人士"}


def harm_rewrite(category: str, question: str) -> str | None:
    """A safe version of a request in a harm category, about the request's own subject.

    The category's template (in the question's language: English, or Chinese in the script it
    was written in) with the question's subject in it, so the person gets an answerable question
    about what they asked rather than a canned sentence. None when the category has no template
    (no safe version exists) or when the rewrite would itself trip a harm rule.
    """
    lang = language(question)
    template = _TEMPLATES[lang].get(category)
    if template is None:
        return None
    topic = subject(question)
    professional = next(
        (names[lang] for pattern, names in _PROFESSIONAL if pattern.search(question)), _ANY_PROFESSIONAL[lang]
    )
    offered = template.format(topic=topic or _NO_TOPIC[lang], professional=professional)
    if harm.rule_hits([offered]):
        # The words of the subject that still read as the harmful request are cut out; when
        # nothing of it is left, the rewrite is as general as the category.
        for rule in (*harm.RULES, *harm.INTENT_RULES):
            topic = rule.pattern.sub(" ", topic)
        topic = " ".join(topic.split()).strip(" ,，、")
        offered = template.format(topic=topic or _NO_TOPIC[lang], professional=professional)
        if harm.rule_hits([offered]):
            offered = template.format(topic=_NO_TOPIC[lang], professional=professional)
    return offered


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
