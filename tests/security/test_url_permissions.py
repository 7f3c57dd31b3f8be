"""Who may do what at every URL: a permission suite generated from Django's URL resolver.

Every URL pattern the resolver knows (config/urls.py, every included app's urls, the admin, the
/v1 API, /healthz, /metrics) is requested with GET and with POST by four personas:

- `anonymous`: nobody signed in;
- `outsider`: signed in, no collection shared with them, no rows of their own (but an API token,
  which the /v1 rows use instead of a session);
- `member`: signed in, reads a collection shared with them (and the public one);
- `staff`: a staff member outside the group that may read the restricted collection.

The objects in the URLs are ones these four must not see: the conversation, messages, answers,
feedback and API token of `insider` (who is in that group), the restricted collection's document
and chunk, a flagged answer made from it, an eval run answered with the insider's permissions.
Secret markers are planted in the restricted document, the insider's private question, feedback
and token; no response to any of the four may contain one, whatever its status.

EXPECTATIONS below says, for each pattern and method, what each persona gets: a status, a
redirect to a login page (LOGIN, ADMIN_LOGIN), an OpenAI-style JSON error (API_401, API_405), or a
page that must hold some text. A control (the insider, or a superuser) shows the object is real,
so that a 404 means "not yours" rather than "no such id". A pattern the resolver knows but the
table does not fails the suite with a message saying how to declare it, so no URL slips in.
Sequences the table cannot express (asking through the chat and the API, a replay, a cache hit,
flagging someone else's answer) are tests at the end.

What staff see by design: every flagged answer's question, text and conversation (the review
queue), any answer's text (a replay, the answer's sources they may read), every document's title
and status (the documents page), eval runs' answers. What they never see, outside the group: a
restricted passage, a private conversation, someone else's feedback or token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from unittest import mock

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.http import HttpResponseBase
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from answer_cache import services as answer_cache
from answer_cache.models import CacheCounter, CachedAnswer
from assistant import serializers, services
from assistant.models import Answer, AnswerSource, ApiToken, Assistant, Feedback, Flag, Message
from config.celery import app as celery_app
from evals import services as evals
from evals.models import Case, JudgeCalibration, Run, Suite
from gateway import provider
from knowledge.models import Chunk, Collection, Document
from ops.health import Check
from review import services as review
from review.models import Review
from routing.models import FineTuneJob
from tests import factories
from tests.expense_policy import POLICY
from tests.fakes import FakeProvider
from usage.models import Budget, ModelCall, ModelPrice, UsageDaily

pytestmark = pytest.mark.django_db

THIS_FILE = "tests/security/test_url_permissions.py"

# --- what must never show -------------------------------------------------------------------

DOCUMENT_SECRET = "SECRETDOC7781Q"  # in the restricted document's text (not its title or name)
CHAT_SECRET = "SECRETCHAT5520X"  # in the insider's private question
FEEDBACK_SECRET = "SECRETFEEDBACK3391"  # in the insider's feedback on that answer
TOKEN_NAME_SECRET = "SECRETTOKEN6604"  # the name of the insider's API token

RESTRICTED = f"""# Salary bands

## Engineering

Senior engineers are paid between 91,000 and 118,000 euros a year.
Every band is checked once a year under the reference {DOCUMENT_SECRET}.
"""
HANDBOOK = """# Handbook

## Holidays

Everyone gets 27 days of paid holiday a year.
"""
QUESTION = "What are the salary bands for senior engineers?"
PRIVATE_QUESTION = f"What are the salary bands for senior engineers? My file is {CHAT_SECRET}."
REPLY = json.dumps(
    {
        "answer": "Senior engineers are paid between 91,000 and 118,000 euros a year [1].",
        "citations": [1],
        "confidence": 0.9,
        "not_found": False,
        "follow_ups": [],
    }
)

NOT_FOUND = json.dumps({"answer": "I do not know.", "citations": [], "not_found": True})

PERSONAS = ("anonymous", "outsider", "member", "staff")
CONTROLS = ("insider", "superuser")


@dataclass
class World:
    """The rows every request is made against; built once for the module, rolled back after it."""

    users: dict[str, User | None]
    sessions: dict[str, str]  # persona -> session key, signed in once (a request's changes are undone)
    tokens: dict[str, str]  # persona -> raw API token
    assistant: Assistant
    group: Group
    restricted: Collection
    document: Document  # the restricted one
    chunk: Chunk  # the restricted one
    private: Answer  # the insider's own answer from the restricted document (not flagged)
    flagged: Answer  # the insider's answer from the restricted document, flagged (the review queue)
    quoted: Answer  # the insider's evidence answer: the restricted passage quoted, flagged too
    feedback: Feedback
    flag: Flag
    token: ApiToken  # the insider's
    raw_token: str  # the insider's
    suite: Suite
    case: Case
    run: Run
    review: Review
    cached: CachedAnswer
    rows: dict[str, models.Model] = field(default_factory=dict)  # one row of each admin model

    @property
    def secrets(self) -> tuple[str, ...]:
        return (DOCUMENT_SECRET, CHAT_SECRET, FEEDBACK_SECRET, TOKEN_NAME_SECRET, self.raw_token)


def _ask(user: User, question: str, fake: FakeProvider, reply: str = REPLY) -> Answer:
    conversation = services.conversation_create(user=user)
    fake.replies.append(reply)
    _, pending = services.message_send(conversation=conversation, text=question)
    return Answer.objects.get(message=services.answer_complete(message=pending))


def _build(fake: FakeProvider) -> World:
    assistant = services.assistant_default()
    assistant.min_similarity = 0.0  # the fake embeddings are crude: every match counts
    assistant.save(update_fields=["min_similarity"])

    people = factories.group("People team")
    insider = factories.user(username="insider")
    insider.groups.add(people)
    member = factories.user(username="member")
    users: dict[str, User | None] = {
        "anonymous": None,
        "outsider": factories.user(username="outsider"),
        "member": member,
        "staff": factories.user(username="staff", staff=True),
        "insider": insider,
        "superuser": factories.user(username="superuser", superuser=True),
    }

    factories.document(
        collection=factories.collection(name="Policies", public=True), text=POLICY, filename="expenses.md"
    )
    handbook = factories.collection(name="Handbook", readers=[member])
    factories.document(collection=handbook, text=HANDBOOK, filename="handbook.md")
    restricted = factories.collection(name="HR restricted")
    restricted.reader_groups.add(people)
    document = factories.document(collection=restricted, text=RESTRICTED, filename="salaries.md")
    chunk = Chunk.objects.get(document=document, text__contains=DOCUMENT_SECRET)

    private = _ask(insider, PRIVATE_QUESTION, fake)
    feedback = services.feedback_give(
        answer=private, user=insider, rating=-1, reason=f"Out of date, see {FEEDBACK_SECRET}"
    )
    flagged = _ask(insider, QUESTION, fake)
    flag = services.flag_create(answer=flagged, user=insider, category=Flag.Category.WRONG, note="Old bands")
    for answer in (private, flagged):
        cited = {c["chunk_id"] for c in answer.citations}
        assert chunk.pk in cited and DOCUMENT_SECRET not in answer.text, "the world is not as the suite needs"
    # The model does not know; the evidence found (strong, say) is quoted as the answer instead.
    with mock.patch("assistant.evidence._strength", return_value=0.9):
        quoted = _ask(insider, "Under which reference is every band checked once a year?", fake, NOT_FOUND)
    assert quoted.answer_source == AnswerSource.EVIDENCE and DOCUMENT_SECRET in quoted.text
    services.flag_create(answer=quoted, user=insider, category=Flag.Category.WRONG, note="Which year?")

    token, raw_token = services.api_token_create(user=insider, name=f"laptop {TOKEN_NAME_SECRET}")
    tokens = {
        persona: services.api_token_create(user=user, name=persona)[1]
        for persona, user in users.items()
        if user is not None and persona != "insider"
    }
    tokens["insider"] = raw_token

    suite = Suite.objects.create(name="Salary checks", run_as=insider)
    case = Case.objects.create(suite=suite, question=QUESTION, expected=["91,000"])
    run = evals.run_start(suite=suite, user=users["superuser"], enqueue=False)
    for result in run.results.all():
        fake.replies.append(REPLY)
        evals.result_execute(result_id=result.pk)
        result.refresh_from_db()
        assert result.answer is not None and chunk.pk in {c["chunk_id"] for c in result.answer.citations}
    run.refresh_from_db()

    superuser = users["superuser"]
    assert superuser is not None
    decided = review.review_assign(answer=flagged, actor=superuser, assignee=superuser)
    cached = answer_cache.cache_store(answer=private)
    assert cached is not None

    rows: dict[str, models.Model] = {
        "usage.usagedaily": UsageDaily.objects.create(
            day=date.today(), user=insider, model="m", purpose="answer"
        ),
        "usage.budget": Budget.objects.create(user=insider, limit=5),
        "answer_cache.cachecounter": CacheCounter.objects.get_or_create(
            day=date.today(), assistant=assistant
        )[0],
        "routing.finetunejob": FineTuneJob.objects.create(
            assistant=assistant, provider_job_id="ftjob-1", base_model="m", training_file_id="file-1"
        ),
        "evals.judgecalibration": JudgeCalibration.objects.create(
            judge_model="m", grader="g", agreement=1, n=1
        ),
    }
    attempt = {"username": "insider", "ip_address": "192.0.2.7", "user_agent": "curl", "path_info": "/login/"}
    rows["axes.accessattempt"] = AccessAttempt.objects.create(
        **attempt, get_data="", post_data="", failures_since_start=1
    )
    rows["axes.accesslog"] = AccessLog.objects.create(**attempt)
    rows["axes.accessfailurelog"] = AccessFailureLog.objects.create(**attempt)
    sessions = {}
    for persona, user in users.items():
        if user is not None:
            client = Client()
            client.force_login(user)
            sessions[persona] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return World(
        users=users,
        sessions=sessions,
        tokens=tokens,
        assistant=assistant,
        group=people,
        restricted=restricted,
        document=document,
        chunk=chunk,
        private=private,
        flagged=flagged,
        quoted=quoted,
        feedback=feedback,
        flag=flag,
        token=token,
        raw_token=raw_token,
        suite=suite,
        case=case,
        run=run,
        review=decided,
        cached=cached,
        rows=rows,
    )


@pytest.fixture(scope="module")
def world(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One world for the whole module (building it per URL would take minutes), inside a
    transaction that is rolled back at the end, so no other test sees these rows. Every request
    below runs in a savepoint of its own, rolled back too: each persona meets the same world.

    The function-scoped fixtures of tests/conftest.py (the fake provider, eager Celery, uploads in
    a temporary folder) do not reach a module fixture, so the build sets up its own.
    """
    # /healthz as the test stack would answer it, without waiting out the checks' timeouts.
    checks = {"database": Check(ok=True, latency_ms=1.0, detail="PostgreSQL 16.2")}
    media = str(tmp_path_factory.mktemp("media"))
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=media),
        mock.patch("ops.views.run_checks", return_value=checks),
        transaction.atomic(),
    ):
        fake = FakeProvider()
        eager = celery_app.conf.task_always_eager
        celery_app.conf.task_always_eager = True
        with ExitStack() as faked:
            for name in ("embed", "chat", "chat_stream", "moderate", "served_models"):
                function = mock.create_autospec(getattr(provider, name), side_effect=getattr(fake, name))
                faked.enter_context(mock.patch.object(provider, name, function))
            try:
                built = _build(fake)
            finally:
                celery_app.conf.task_always_eager = eager
        yield built
        transaction.set_rollback(True)


# --- expected outcomes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Redirect:
    """A redirect whose Location starts with `to`."""

    to: str

    def problem(self, response: HttpResponseBase, body: str) -> str | None:
        location = response.get("Location", "")
        if response.status_code == 302 and location.startswith(self.to):
            return None
        return f"expected a redirect to {self.to}…, got {response.status_code} {location}".strip()


@dataclass(frozen=True)
class Page:
    """This status, with a body holding each of `contains` (and, as for every response, no secret)."""

    status: int = 200
    contains: tuple[str, ...] = ()

    def problem(self, response: HttpResponseBase, body: str) -> str | None:
        if response.status_code != self.status:
            return f"expected {self.status}, got {response.status_code}{_where(response)}"
        if response.status_code in (301, 302) and _to_login(response):
            return f"expected {self.status} without a login, got a redirect to {response['Location']}"
        missing = [text for text in self.contains if text not in body]
        return f"the body lacks {missing}" if missing else None


@dataclass(frozen=True)
class ApiError:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with this status."""

    status: int

    def problem(self, response: HttpResponseBase, body: str) -> str | None:
        if response.status_code != self.status:
            return f"expected an API error {self.status}, got {response.status_code}"
        try:
            error = json.loads(body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"expected an OpenAI-style JSON error, got {body[:200]!r}"
        if set(error) != {"message", "type", "param", "code"} or not error["message"]:
            return f"the error lacks OpenAI's fields: {error}"
        return None


@dataclass(frozen=True)
class Health:
    """/healthz: the status, with the components only for those who may read them."""

    details: bool

    def problem(self, response: HttpResponseBase, body: str) -> str | None:
        if response.status_code != 200:
            return f"expected 200, got {response.status_code}"
        keys = set(json.loads(body))
        wanted = {"status", "components"} if self.details else {"status"}
        return None if keys == wanted else f"expected the keys {sorted(wanted)}, got {sorted(keys)}"


Outcome = int | Redirect | Page | ApiError | Health


def _where(response: HttpResponseBase) -> str:
    return f" to {response['Location']}" if response.has_header("Location") else ""


def _to_login(response: HttpResponseBase) -> bool:
    location = response.get("Location", "")
    return location.startswith((reverse("login"), reverse("admin:login")))


def problem_with(expected: Outcome, response: HttpResponseBase, body: str) -> str | None:
    if isinstance(expected, int):
        expected = Page(expected)
    return expected.problem(response, body)


LOGIN = Redirect("/login/?next=")
ADMIN_LOGIN = Redirect("/admin/login/?next=")
SIGNED_OUT = Redirect("/login/")
API_401 = ApiError(401)
API_405 = ApiError(405)
REVIEW_NOTE = "a collection you may not read"


@dataclass(frozen=True)
class Row:
    """What each persona gets from one method; `control` is (persona, outcome) for someone who may."""

    anonymous: Outcome
    outsider: Outcome
    member: Outcome
    staff: Outcome
    control: tuple[str, Outcome] | None = None

    def of(self, persona: str) -> Outcome:
        outcome: Outcome = getattr(self, persona)
        return outcome


Kwargs = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Declared:
    """One URL pattern: how to fill it in, and what GET and POST give each persona."""

    get: Row
    post: Row
    kwargs: Kwargs = lambda w: {}
    also: tuple[Kwargs, ...] = ()  # further objects, requested with the same expectations
    url: Callable[[World], str] | None = None  # for a pattern without a name
    query: Callable[[World], str] = lambda w: ""
    data: Callable[[World], dict[str, Any]] = lambda w: {}
    htmx: bool = False
    api: bool = False  # personas send their own API token, not a session


def everyone(outcome: Outcome) -> Row:
    return Row(outcome, outcome, outcome, outcome)


WRONG_METHOD = everyone(405)


def signed_in(outcome: Outcome, control: tuple[str, Outcome] | None = None) -> Row:
    """Anyone signed in, on their own rows (so nobody else's show)."""
    return Row(LOGIN, outcome, outcome, outcome, control)


def insiders(outcome: Outcome) -> Row:
    """The insider's own rows: everyone else, staff included, is told there is no such thing."""
    return Row(LOGIN, 404, 404, 404, ("insider", outcome))


def staff_only(outcome: Outcome, control: Outcome | None = None) -> Row:
    return Row(LOGIN, 403, 403, outcome, ("superuser", outcome if control is None else control))


def page(row: Row, **options: Any) -> Declared:
    """A GET page; POST is refused."""
    return Declared(get=row, post=WRONG_METHOD, **options)


def action(row: Row, **options: Any) -> Declared:
    """A POST action; GET is refused."""
    return Declared(get=WRONG_METHOD, post=row, **options)


def _private_citation(w: World) -> dict[str, Any]:
    n = next(c["n"] for c in w.private.citations if c["chunk_id"] == w.chunk.pk)
    return {"pk": w.private.pk, "n": n}


def private_message(w: World) -> dict[str, Any]:
    return {"pk": w.private.message_id}


def private_answer(w: World) -> dict[str, Any]:
    return {"pk": w.private.pk}


def flagged_answer(w: World) -> dict[str, Any]:
    return {"pk": w.flagged.pk}


def quoted_answer(w: World) -> dict[str, Any]:
    return {"pk": w.quoted.pk}


def _quoted_citation(w: World) -> dict[str, Any]:
    n = next(c["n"] for c in w.quoted.citations if c["chunk_id"] == w.chunk.pk)
    return {"pk": w.quoted.pk, "n": n}


FLAGGED = {"kwargs": flagged_answer, "also": (quoted_answer,)}  # a model's answer, and a quote


def run_pk(w: World) -> dict[str, Any]:
    return {"pk": w.run.pk}


def ask(w: World) -> dict[str, Any]:
    return {"text": QUESTION}


# Keyed by URL name, or by route where a name has several patterns or none. Grouped by app.
EXPECTATIONS: dict[str, Declared] = {
    # --- assistant: the chat; the insider's conversation, messages and answers ------------------
    "assistant:home": page(signed_in(200)),
    "assistant:new": page(signed_in(200)),
    "assistant:conversation": page(
        insiders(Page(contains=(CHAT_SECRET,))), kwargs=lambda w: {"pk": w.private.message.conversation_id}
    ),
    "send/": action(signed_in(302), data=ask),  # a new conversation of one's own
    "c/<int:pk>/send/": action(
        insiders(302), kwargs=lambda w: {"pk": w.private.message.conversation_id}, data=ask
    ),
    "assistant:message": page(insiders(302), kwargs=private_message),
    "assistant:message_stream": page(insiders(200), kwargs=private_message),
    "assistant:message_stop": action(insiders(302), kwargs=private_message),
    "assistant:message_retry": action(insiders(302), kwargs=private_message),
    "assistant:regenerate": action(insiders(302), kwargs=private_message),
    # Staff may read any answer, but not a source in a collection they may not read.
    "assistant:source": page(
        insiders(Page(contains=(DOCUMENT_SECRET,))), kwargs=_private_citation, also=(_quoted_citation,)
    ),
    # Only the asker rates or flags (a flag would put someone's private chat in the review queue).
    "assistant:feedback": action(insiders(302), kwargs=private_answer, data=lambda w: {"rating": 1}),
    "assistant:flag": action(
        insiders(302), kwargs=private_answer, data=lambda w: {"category": "wrong", "note": "x"}
    ),
    # A replay runs with the replaying staff member's permissions: no restricted passage.
    "assistant:replay": action(Row(LOGIN, 403, 403, 200, ("superuser", 200)), **FLAGGED),
    "assistant:notice": action(signed_in(302), data=lambda w: {"hidden": "1"}),
    # --- api: the OpenAI-compatible API takes tokens, never sessions ---------------------------
    "api:models": Declared(get=Row(API_401, 200, 200, 200), post=everyone(API_405), api=True),
    "api:model": Declared(
        get=Row(API_401, 200, 200, 200),
        post=everyone(API_405),
        kwargs=lambda w: {"model_id": serializers.model_id(w.assistant)},
        api=True,
    ),
    "api:chat_completions": Declared(
        get=everyone(API_405),
        post=Row(API_401, 200, 200, 200, ("insider", Page(contains=("salaries.md",)))),
        data=lambda w: {"messages": [{"role": "user", "content": QUESTION}]},
        api=True,
    ),
    "api:tokens": Declared(get=signed_in(200), post=signed_in(200), data=lambda w: {"name": "mine"}),
    "api:token_revoke": action(insiders(302), kwargs=lambda w: {"pk": w.token.pk}),
    # --- ops: health, the dashboard, metrics ---------------------------------------------------
    "ops:healthz": page(Row(Health(False), Health(False), Health(False), Health(True))),
    "ops:dashboard": page(staff_only(200)),
    "ops:metrics": page(Row(401, 403, 403, 200)),
    # --- knowledge: staff manage every document, but read only what they may --------------------
    "knowledge:upload": Declared(get=staff_only(200), post=staff_only(200)),
    "knowledge:document_row": page(staff_only(200), kwargs=lambda w: {"pk": w.document.pk}, htmx=True),
    "knowledge:document_delete": action(staff_only(302), kwargs=lambda w: {"pk": w.document.pk}),
    "knowledge:retrieval": page(
        staff_only(200, Page(contains=(DOCUMENT_SECRET,))), query=lambda w: f"q={QUESTION}"
    ),
    # --- evals: staff only; a run answered with the insider's permissions -----------------------
    "evals:dashboard": page(staff_only(200)),
    "evals:suite": page(staff_only(200), kwargs=lambda w: {"pk": w.suite.pk}),
    "evals:run_start": action(staff_only(302), kwargs=lambda w: {"pk": w.suite.pk}),
    "evals:run": page(staff_only(200), kwargs=run_pk),
    "evals:run_progress": page(staff_only(302), kwargs=run_pk),
    "evals:run_cancel": action(staff_only(302), kwargs=run_pk),
    "evals:run_rerun": action(staff_only(302), kwargs=run_pk),
    # --- review: staff see the flagged answer and a note, not the restricted passages ----------
    "review:queue": page(staff_only(200)),
    "review:item": page(
        staff_only(Page(contains=(REVIEW_NOTE,)), Page(contains=(DOCUMENT_SECRET,))), **FLAGGED
    ),
    "review:approve": action(staff_only(302), **FLAGGED),
    # Empty forms: the item page again, with the errors.
    "review:correct": action(staff_only(200), **FLAGGED),
    "review:reject": action(staff_only(200), **FLAGGED),
    "review:escalate": action(staff_only(200), **FLAGGED),
    "review:assign": action(staff_only(200), **FLAGGED),
    # --- routing ----------------------------------------------------------------------------
    "routing:overview": page(staff_only(200)),
    # --- signing in and out -------------------------------------------------------------------
    "login": Declared(
        get=Row(200, 302, 302, 302), post=Row(200, 302, 302, 302), data=lambda w: {"username": "insider"}
    ),
    "logout": Declared(get=WRONG_METHOD, post=everyone(SIGNED_OUT)),
}

# --- the admin: Django's permissions; staff without them are refused --------------------------

ADMIN_SITE = Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 200, ("superuser", 200))
ADMIN_WRONG_METHOD = Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 405)
EXPECTATIONS.update(
    {
        "admin:index": Declared(get=ADMIN_SITE, post=ADMIN_SITE),
        "admin:login": Declared(get=Row(200, 200, 200, 302), post=everyone(200)),
        "admin:logout": Declared(get=Row(302, 302, 302, 405), post=Row(302, 302, 302, SIGNED_OUT)),
        "admin:password_change": Declared(get=ADMIN_SITE, post=ADMIN_SITE),
        "admin:password_change_done": Declared(get=ADMIN_SITE, post=ADMIN_WRONG_METHOD),
        # Staff with no admin permission may autocomplete nothing (a superuser needs parameters).
        "admin:autocomplete": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 403, ("superuser", 403)), post=ADMIN_WRONG_METHOD
        ),
        "admin:jsi18n": Declared(get=ADMIN_SITE, post=ADMIN_WRONG_METHOD),
        "admin:view_on_site": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404, ("superuser", 404)),
            post=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404),
            kwargs=lambda w: {
                "content_type_id": ContentType.objects.get_for_model(Chunk).pk,
                "object_id": w.chunk.pk,
            },
        ),
        "admin:app_list": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404, ("superuser", 200)),
            post=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404),
            kwargs=lambda w: {"app_label": "knowledge"},
        ),
        "admin/(?P<url>.*)$": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404),
            post=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 404),
            url=lambda w: "/admin/no-such-page/",
        ),
        "admin:auth_user_password_change": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 403, ("superuser", 200)),
            post=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 403),
            kwargs=lambda w: {"id": w.private.user_id},
        ),
    }
)


@dataclass(frozen=True)
class AdminModel:
    """A registered model: the row its pages open, and what a superuser gets where it differs."""

    row: Callable[[World], models.Model]
    add: int = 200  # a superuser's GET of the add page (403 where nobody adds by hand)
    delete: int = 200


ADMIN_MODELS: dict[str, AdminModel] = {
    "auth.group": AdminModel(lambda w: w.group),
    "auth.user": AdminModel(lambda w: w.private.user),
    "knowledge.collection": AdminModel(lambda w: w.restricted),
    "knowledge.document": AdminModel(lambda w: w.document, add=403),
    "knowledge.chunk": AdminModel(lambda w: w.chunk, add=403, delete=403),
    "assistant.assistant": AdminModel(lambda w: w.assistant),
    "assistant.prompttemplate": AdminModel(lambda w: w.assistant.prompt),
    "assistant.answer": AdminModel(lambda w: w.private, add=403),
    "assistant.flag": AdminModel(lambda w: w.flag, add=403),
    "assistant.feedback": AdminModel(lambda w: w.feedback, add=403),
    "assistant.apitoken": AdminModel(lambda w: w.token, add=403),
    "evals.suite": AdminModel(lambda w: w.suite),
    "evals.case": AdminModel(lambda w: w.case),
    "evals.run": AdminModel(lambda w: w.run, add=403),
    "evals.result": AdminModel(lambda w: w.run.results.first(), add=403),
    "evals.judgecalibration": AdminModel(lambda w: w.rows["evals.judgecalibration"], add=403),
    "review.review": AdminModel(lambda w: w.review, add=403),
    "routing.finetunejob": AdminModel(lambda w: w.rows["routing.finetunejob"], add=403),
    "usage.modelprice": AdminModel(lambda w: ModelPrice.objects.first()),
    "usage.budget": AdminModel(lambda w: w.rows["usage.budget"]),
    "usage.modelcall": AdminModel(lambda w: ModelCall.objects.filter(user=w.private.user).first(), add=403),
    "usage.usagedaily": AdminModel(lambda w: w.rows["usage.usagedaily"], add=403),
    "answer_cache.cachedanswer": AdminModel(lambda w: w.cached),
    "answer_cache.cachecounter": AdminModel(lambda w: w.rows["answer_cache.cachecounter"]),
    # django-axes: sign-in attempts and lockouts (who tried which account, from where).
    "axes.accessattempt": AdminModel(lambda w: w.rows["axes.accessattempt"], add=403),
    "axes.accesslog": AdminModel(lambda w: w.rows["axes.accesslog"], add=403),
    "axes.accessfailurelog": AdminModel(lambda w: w.rows["axes.accessfailurelog"], add=403),
}


def _admin_pages(label: str, model: AdminModel) -> dict[str, Declared]:
    """The six patterns Django's admin gives every registered model."""
    app, name = label.split(".")
    prefix = f"admin:{app}_{name}"
    refused = Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 403)

    def obj(w: World) -> dict[str, Any]:
        return {"object_id": model.row(w).pk}

    def declared(control: int, **options: Any) -> Declared:
        get = Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 403, ("superuser", control))
        return Declared(get=get, post=refused, **options)

    return {
        f"{prefix}_changelist": declared(200),
        f"{prefix}_add": declared(model.add),
        f"{prefix}_history": declared(200, kwargs=obj),
        f"{prefix}_delete": declared(model.delete, kwargs=obj),
        f"{prefix}_change": declared(200, kwargs=obj),
        # The bare object URL redirects to its change page, which refuses them.
        f"admin/{app}/{name}/<path:object_id>/": Declared(
            get=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 302, ("superuser", 302)),
            post=Row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 302),
            url=lambda w: f"/admin/{app}/{name}/{model.row(w).pk}/",
        ),
    }


for _label, _model in ADMIN_MODELS.items():
    EXPECTATIONS.update(_admin_pages(_label, _model))


# --- the resolver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One URL pattern as the resolver has it: its full route and its namespaced name."""

    route: str
    name: str | None

    @property
    def key(self) -> str:
        """The table's key: the name, unless the name has several patterns (or none)."""
        if self.name and NAME_COUNTS[self.name] == 1:
            return self.name
        return self.route


def _walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or ""
            joined = f"{namespace}:{inner}" if namespace and inner else (inner or namespace)
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), joined)
        elif isinstance(pattern, URLPattern):
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield Route(prefix + str(pattern.pattern), name or None)


ROUTES = list(_walk(get_resolver().url_patterns))
NAME_COUNTS: dict[str, int] = {}
for _route in ROUTES:
    if _route.name:
        NAME_COUNTS[_route.name] = NAME_COUNTS.get(_route.name, 0) + 1


def test_every_url_pattern_has_a_declared_expectation() -> None:
    missing = [f"{r.key}  ({r.route})" for r in ROUTES if r.key not in EXPECTATIONS]
    assert not missing, (
        "URL patterns without a declared expectation; add each to EXPECTATIONS (or, for a model "
        f"registered in the admin, ADMIN_MODELS) in {THIS_FILE}, saying what an anonymous "
        "visitor, an outsider, a member and staff outside the group get:\n  " + "\n  ".join(missing)
    )


def test_every_declared_expectation_is_a_url_pattern() -> None:
    keys = {r.key for r in ROUTES}
    stale = sorted(set(EXPECTATIONS) - keys)
    assert not stale, f"EXPECTATIONS in {THIS_FILE} declares patterns the resolver no longer has: {stale}"


# --- requests -------------------------------------------------------------------------------


def _url(route: Route, declared: Declared, kwargs: Kwargs, w: World) -> str:
    if declared.url is not None:
        url = declared.url(w)
    else:
        assert route.name, f"{route.route} has no name: declare `url` for it"
        url = reverse(route.name, kwargs=kwargs(w))
    query = declared.query(w)
    return f"{url}?{query}" if query else url


def _body(response: HttpResponseBase) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")  # type: ignore[attr-defined]
    return response.content.decode(errors="replace")


def request_as(
    persona: str, method: str, url: str, declared: Declared, w: World
) -> tuple[HttpResponseBase, str]:
    """One request, in a savepoint rolled back afterwards: nothing it does outlives it."""
    with transaction.atomic():
        client = Client(raise_request_exception=False)
        headers: dict[str, str] = {"HX-Request": "true"} if declared.htmx else {}
        user = w.users[persona]
        if declared.api:
            if user is not None:
                headers["Authorization"] = f"Bearer {w.tokens[persona]}"
        elif user is not None:
            client.cookies[settings.SESSION_COOKIE_NAME] = w.sessions[persona]
        if method == "GET":
            response = client.get(url, headers=headers)
        elif declared.api:
            body = json.dumps(declared.data(w))
            response = client.post(url, body, content_type="application/json", headers=headers)
        else:
            response = client.post(url, declared.data(w), headers=headers)
        body = _body(response)
        transaction.set_rollback(True)
    return response, body


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.route or "/")
def test_url_pattern(route: Route, world: World) -> None:
    declared = EXPECTATIONS.get(route.key)
    if declared is None:
        pytest.fail(
            f"{route.route} ({route.key}) has no declared expectation: add it to EXPECTATIONS in "
            f"{THIS_FILE}, saying what each persona gets with GET and POST."
        )
    problems = []
    urls = [_url(route, declared, kwargs, world) for kwargs in (declared.kwargs, *declared.also)]
    for url in urls:
        for method, row in (("GET", declared.get), ("POST", declared.post)):
            for persona in PERSONAS:
                response, body = request_as(persona, method, url, declared, world)
                issue = problem_with(row.of(persona), response, body)
                leaked = [secret for secret in world.secrets if secret in body]
                if leaked:
                    issue = f"{issue + '; ' if issue else ''}the body shows {leaked}"
                if issue:
                    problems.append(f"{method} {url} as {persona}: {issue}")
            if row.control is not None:
                persona, expected = row.control
                response, body = request_as(persona, method, url, declared, world)
                issue = problem_with(expected, response, body)
                if issue:
                    problems.append(f"{method} {url} as {persona} (control): {issue}")
    assert not problems, f"{route.route} ({route.key}):\n  " + "\n  ".join(problems)


# --- scenarios: what a sequence of requests must not reveal ---------------------------------

OUTSIDERS = ("outsider", "member", "staff")


@contextmanager
def rolled_back() -> Iterator[None]:
    """A savepoint undone at the end, so the next test meets the world as it was built."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def client_of(w: World, persona: str) -> Client:
    client = Client()
    user = w.users[persona]
    if user is not None:
        client.force_login(user)
    return client


def chat(client: Client, question: str) -> tuple[Answer, str]:
    """Ask in a new conversation and stream the answer; returns it and all the HTML seen."""
    sent = client.post(reverse("assistant:send"), {"text": question})
    assert sent.status_code == 302, sent
    conversation = int(sent["Location"].strip("/").split("/")[-1])
    pending = Message.objects.filter(conversation_id=conversation, role=Message.Role.ASSISTANT).get()
    streamed = _body(client.get(reverse("assistant:message_stream", args=[pending.pk])))
    page = client.get(reverse("assistant:conversation", args=[conversation])).content.decode()
    return Answer.objects.get(message=pending), streamed + page


def restricted_chunks(w: World, answer: Answer) -> set[int]:
    """Restricted chunks the answer was made from: cited, retrieved or quoted as evidence."""
    used = {c.get("chunk_id") for c in answer.citations}
    used |= {r.get("chunk_id") for r in answer.retrieved or []}
    used |= {e.get("chunk_id") for e in answer.evidence or [] if isinstance(e, dict)}
    return used & set(Chunk.objects.filter(collection=w.restricted).values_list("pk", flat=True))


@pytest.mark.parametrize("persona", OUTSIDERS)
def test_asking_about_the_restricted_document_reveals_nothing_outside_the_group(
    world: World, fake_provider: FakeProvider, persona: str
) -> None:
    with rolled_back():
        fake_provider.replies = [REPLY, REPLY]  # a model citing source [1], whatever it is
        answer, html = chat(client_of(world, persona), QUESTION)
        assert not restricted_chunks(world, answer) and not any(s in html for s in world.secrets)

        response = Client().post(
            reverse("api:chat_completions"),
            {"messages": [{"role": "user", "content": QUESTION}]},
            content_type="application/json",
            headers={"Authorization": f"Bearer {world.tokens[persona]}"},
        )
        body = response.content.decode()
        assert response.status_code == 200 and not any(s in body for s in world.secrets)
        answer = Answer.objects.get(pk=response.json()["groundwork"]["answer_id"])
        assert not restricted_chunks(world, answer)


def test_the_insider_gets_the_restricted_document(world: World, fake_provider: FakeProvider) -> None:
    """The control for the test above: the same question finds the document for its reader."""
    with rolled_back():
        fake_provider.replies = [REPLY]
        answer, _ = chat(client_of(world, "insider"), QUESTION + " Senior engineers?")
        assert restricted_chunks(world, answer)


def test_a_replay_by_staff_outside_the_group_runs_with_their_permissions(
    world: World, fake_provider: FakeProvider
) -> None:
    with rolled_back():
        fake_provider.replies = [REPLY]
        response = client_of(world, "staff").post(reverse("assistant:replay", args=[world.flagged.pk]))
        replay = Answer.objects.get(replay_of=world.flagged)
        assert response.status_code == 200 and replay.user == world.users["staff"]
        assert not restricted_chunks(world, replay)
        assert not any(s in response.content.decode() for s in world.secrets)


@pytest.mark.parametrize("persona", ["staff", "superuser"])
def test_only_the_asker_rates_or_flags_an_answer(world: World, persona: str) -> None:
    """Flagging puts an answer and its conversation in the review queue, in front of every staff
    member: staff must not pull someone's private chat there, nor speak for the asker."""
    client = client_of(world, persona)
    with rolled_back():
        flag = client.post(reverse("assistant:flag", args=[world.private.pk]), {"category": "wrong"})
        feedback = client.post(reverse("assistant:feedback", args=[world.private.pk]), {"rating": -1})
        item = client.get(reverse("review:item", args=[world.private.pk]))
        assert (flag.status_code, feedback.status_code, item.status_code) == (404, 404, 404)
        assert not Flag.objects.filter(answer=world.private).exists()
        assert CHAT_SECRET not in item.content.decode()


def test_the_asker_still_rates_and_flags_their_own_answer(world: World) -> None:
    client = client_of(world, "insider")
    with rolled_back():
        flagged = client.post(reverse("assistant:flag", args=[world.private.pk]), {"category": "wrong"})
        rated = client.post(reverse("assistant:feedback", args=[world.private.pk]), {"rating": 1})
        assert (flagged.status_code, rated.status_code) == (302, 302)
        assert Flag.objects.filter(answer=world.private, user=world.users["insider"]).exists()


def test_metrics_and_health_details_need_staff_or_the_metrics_token(world: World, settings: Any) -> None:
    settings.METRICS_TOKEN = "metrics-token-123"
    right, wrong = {"Authorization": "Bearer metrics-token-123"}, {"Authorization": "Bearer nope"}
    assert Client().get(reverse("ops:metrics"), headers=right).status_code == 200
    assert Client().get(reverse("ops:metrics"), headers=wrong).status_code == 401
    assert "components" in json.loads(Client().get(reverse("ops:healthz"), headers=right).content)
    assert set(json.loads(Client().get(reverse("ops:healthz"), headers=wrong).content)) == {"status"}


@pytest.mark.parametrize("name", ["api:models", "api:chat_completions"])
def test_the_api_takes_neither_a_session_nor_a_revoked_token(world: World, name: str) -> None:
    with rolled_back():
        session = client_of(world, "insider")
        revoked = world.tokens["member"]
        ApiToken.objects.filter(user=world.users["member"]).delete()
        for client, headers in ((session, {}), (Client(), {"Authorization": f"Bearer {revoked}"})):
            response = client.generic(
                "GET" if name == "api:models" else "POST",
                reverse(name),
                json.dumps({"messages": [{"role": "user", "content": QUESTION}]}),
                content_type="application/json",
                headers=headers,
            )
            assert problem_with(API_401, response, response.content.decode()) is None


def test_a_cache_hit_names_someone_elses_question_only_once_staff_approved_it(
    world: World, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.ANSWER_CACHE_SIMILARITY = settings.ANSWER_CACHE_SIMILARITY_FLOOR = 0.9  # fake vectors
    colleague = factories.user(username="colleague")  # reads what the member reads
    Collection.objects.get(name="Handbook").reader_users.add(colleague)
    mine = "How many days of paid holiday does everyone get a year?"
    theirs = f"How many days of paid holiday does everyone get a year {CHAT_SECRET}?"
    with rolled_back():
        fake_provider.replies = [json.dumps({"answer": "Everyone gets 27 days [1].", "citations": [1]})]
        with factories.committed():  # the answer's bookkeeping offers it to the cache
            first, _ = chat(_login(colleague), theirs)
        member = client_of(world, "member")
        hit, html = chat(member, mine)
        assert hit.cache_hit and hit.cached_from == first
        assert CHAT_SECRET not in html and "an earlier answer to a similar question" in html
        assert serializers.cached_from_json(hit)["question"] is None  # type: ignore[index]

        answer_cache.cache_store(answer=first, approved=True)  # what approving in the review queue does
        page = member.get(reverse("assistant:conversation", args=[hit.message.conversation_id]))
        assert CHAT_SECRET in page.content.decode()


def _login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_cached_answer_is_never_served_across_permissions(
    world: World, fake_provider: FakeProvider
) -> None:
    """The insider's private answer is cached; the same question from anyone else is answered
    afresh, within what they may read."""
    for persona in OUTSIDERS:
        with rolled_back():
            fake_provider.replies = [REPLY]
            answer, _ = chat(client_of(world, persona), PRIVATE_QUESTION)
            assert not answer.cache_hit and not restricted_chunks(world, answer)


def test_uploaded_files_are_not_served(world: World) -> None:
    """Nothing routes MEDIA_URL: a stored file is reachable only through the pages above."""
    url = f"/{settings.MEDIA_URL.strip('/')}/{world.document.file.name}"
    for persona in (*PERSONAS, *CONTROLS):
        assert client_of(world, persona).get(url).status_code == 404


def test_retrieval_refuses_a_collection_the_staff_member_cannot_read(world: World) -> None:
    response = client_of(world, "staff").get(
        reverse("knowledge:retrieval"), {"q": QUESTION, "collection": world.restricted.pk}
    )
    body = response.content.decode()
    assert response.status_code == 200 and "Select a valid choice" in body and DOCUMENT_SECRET not in body


def test_staff_in_the_group_see_a_quoted_answer_that_staff_outside_it_do_not(world: World) -> None:
    reviewer = factories.user(username="reviewer", staff=True)
    reviewer.groups.add(world.group)
    url = reverse("review:item", args=[world.quoted.pk])
    assert DOCUMENT_SECRET in _login(reviewer).get(url).content.decode()
    page = client_of(world, "staff").get(url).content.decode()
    assert DOCUMENT_SECRET not in page and "This answer quotes passages from a collection you may not" in page
