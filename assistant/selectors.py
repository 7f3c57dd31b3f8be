"""Reads of the assistant's data that other apps may import (services write; these only read).

`history_before` is here and not in services because the answer cache, the evals and the
distillation all read a conversation's history, and none of them may depend on the writes.
"""

from __future__ import annotations

from assistant.models import Assistant, Message


def history_before(message: Message) -> list[tuple[str, str]]:
    """Question/answer pairs asked before this message's question, oldest first.

    Bounded by the question's time, not the answer's: a regenerated answer must not see the
    earlier answer to the same question.
    """
    asked_at = message.reply_to.created_at if message.reply_to else message.created_at
    answers = (
        Message.objects.filter(
            conversation_id=message.conversation_id,
            role=Message.Role.ASSISTANT,
            status=Message.Status.COMPLETE,
            reply_to__created_at__lt=asked_at,
        )
        .select_related("reply_to")
        .order_by("-created_at")[:3]
    )
    return [(m.reply_to.content, m.content) for m in reversed(answers) if m.reply_to]


def models_in_use() -> list[str]:
    """The chat models assistants are set to call, beyond the site's default (for the price check)."""
    return sorted(set(Assistant.objects.exclude(model="").values_list("model", flat=True)))
