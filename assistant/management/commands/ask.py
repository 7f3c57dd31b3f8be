from __future__ import annotations

import json
import textwrap
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant import pipeline, serializers, services
from assistant.models import Answer, AnswerSource, Assistant
from gateway import provider
from usage import services as usage


class Command(BaseCommand):
    help = (
        "Ask the assistant a question from the shell, with a user's permissions; the answer is "
        "recorded like any other. --json prints one JSON object for scripts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question", nargs="+", help="The question; several words need no quotes.")
        parser.add_argument("--user", help="Answer with this user's permissions (default: first superuser).")
        parser.add_argument("--assistant", help="The assistant's name or model id (default: the default).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")

    def handle(self, *args: Any, **options: Any) -> None:
        question = " ".join(options["question"])
        user = _user(options["user"])
        assistant = _assistant(options["assistant"]) if options["assistant"] else None
        try:
            answer = services.answer_for(user=user, question=question, assistant=assistant)
        except pipeline.QuestionRejected as exc:
            raise CommandError(str(exc)) from exc
        except usage.BudgetExceeded as exc:
            raise CommandError(f"No answer: {exc.message}") from exc
        except provider.ProviderError as exc:
            raise CommandError(f"No answer: {exc} ({exc.kind.value})") from exc
        if options["json"]:
            self.stdout.write(json.dumps(serializers.answer_record(answer), ensure_ascii=False, indent=2))
        else:
            self._show(answer)

    def _show(self, answer: Answer) -> None:
        if answer.answer_source == AnswerSource.EVIDENCE:
            self.stdout.write("Quoted from your documents (the model's own answer could not be checked):")
        for paragraph in answer.text.split("\n"):
            self.stdout.write(textwrap.fill(paragraph, width=100) if paragraph else "")
        if answer.abstained and answer.abstain_reason:
            self.stdout.write(f"\n({answer.abstain_reason})")
        if answer.rewrite:
            self.stdout.write(f"Try asking: {answer.rewrite}")
        if answer.citations:
            self.stdout.write("\nSources:")
            for citation in serializers.citations_json(answer):
                where = ", ".join(
                    part
                    for part in (
                        citation["filename"],
                        f"page {citation['page']}" if citation["page"] else "",
                        citation["heading"],
                    )
                    if part
                )
                self.stdout.write(f"  [{citation['n']}] {citation['title']} ({where})")
                quote = textwrap.shorten(str(citation["quote"]), width=200, placeholder=" …")
                self.stdout.write(textwrap.indent(textwrap.fill(f"“{quote}”", width=96), "      "))
        if answer.evidence and answer.answer_source != AnswerSource.EVIDENCE:
            heading = (
                "Related passages (they may not answer it)" if answer.abstained else "From your documents"
            )
            self.stdout.write(f"\n{heading}:")
            for item in serializers.evidence_json(answer):
                quote = textwrap.shorten(str(item["text"]), width=200, placeholder=" …")
                self.stdout.write(textwrap.indent(textwrap.fill(f"[{item['n']}] “{quote}”", width=96), "  "))
        if answer.suggestions:
            self.stdout.write("\nYou could also ask:")
            for suggestion in answer.suggestions:
                self.stdout.write(f"  - {suggestion}")
        self.stdout.write("\n" + _status(answer))


def _status(answer: Answer) -> str:
    if answer.abstained:
        trust = "abstained"
    elif answer.grounded is False:
        trust = "NOT grounded in the cited sources"
    else:
        trust = "grounded"
    confidence = "" if answer.confidence is None else f"confidence {answer.confidence:.2f} · "
    latency = serializers.latency_total(answer)
    took = "" if latency is None else f" · {latency:.0f} ms"
    prompt = f"prompt v{answer.prompt.version}"
    return f"{trust} · {confidence}{answer.model} · {prompt}{took} · answer #{answer.pk}"


def _user(username: str | None) -> Any:
    users = get_user_model().objects
    if username:
        try:
            return users.get_by_natural_key(username)
        except get_user_model().DoesNotExist as exc:
            raise CommandError(f"No user named {username!r}.") from exc
    user = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if user is None:
        raise CommandError(
            "No active superuser to answer as: pass --user USERNAME, or create one with "
            "`manage.py createsuperuser`."
        )
    return user


def _assistant(name: str) -> Assistant:
    assistant = serializers.assistant_named(name)
    if assistant is None:
        known = ", ".join(repr(a.name) for a in Assistant.objects.all()) or "none yet"
        raise CommandError(f"No assistant named {name!r}; the assistants are: {known}.")
    return assistant
