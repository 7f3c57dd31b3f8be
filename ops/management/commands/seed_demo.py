from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files import File
from django.core.management.base import BaseCommand
from django.db import transaction

from evals.services import seed_default_suite
from knowledge import services as knowledge

# Real documents with licences that allow it, read from where Debian installs them on every
# machine (base-files and base-passwd are essential packages), plus Groundwork's own docs.
DEMO_COLLECTIONS: list[tuple[str, str, bool, list[Path]]] = [
    (
        "Open-source licences",
        "Licence texts as Debian ships them: what each licence allows and requires.",
        True,
        [Path("/usr/share/common-licenses") / name for name in ("Apache-2.0", "MPL-2.0", "BSD", "GPL-3")],
    ),
    (
        "Debian administration",
        "Debian's own notes on system users and groups.",
        True,
        [Path("/usr/share/doc/base-passwd/users-and-groups.html")],
    ),
    (
        "Groundwork handbook",
        "How Groundwork works and how to run it. Readable by staff only.",
        False,
        [settings.BASE_DIR / "docs" / "architecture.md", settings.BASE_DIR / "README.md"],
    ),
]


class Command(BaseCommand):
    help = "Create the demo admin and user (once) and queue the demo collections for indexing."

    def handle(self, *args: Any, **options: Any) -> None:
        logins = Path(settings.DATA_DIR) / "demo-logins.txt"
        with transaction.atomic():
            lines = [self._user("admin", superuser=True), self._user("demo", superuser=False)]
            created = [line for line in lines if line]
            if created:
                logins.write_text("\n".join(created) + "\n")
                logins.chmod(0o600)
            staff, _ = Group.objects.get_or_create(name="Staff")
            User.objects.get(username="admin").groups.add(staff)
            for name, description, public, paths in DEMO_COLLECTIONS:
                collection = knowledge.collection_create(name=name, description=description, is_public=public)
                if not public:
                    collection.reader_groups.add(staff)
                for path in paths:
                    self._upload(collection, path)
        suite = seed_default_suite()
        self.stdout.write(f"demo: eval suite “{suite.name}” with {suite.cases.count()} cases")

    def _user(self, username: str, *, superuser: bool) -> str:
        if User.objects.filter(username=username).exists():
            return ""
        password = secrets.token_urlsafe(9)
        User.objects.create_user(
            username=username, password=password, is_staff=superuser, is_superuser=superuser
        )
        role = "admin (staff, superuser)" if superuser else "user"
        return f"login: {username} / {password}   {role}"

    def _upload(self, collection: Any, path: Path) -> None:
        if not path.exists():
            self.stdout.write(f"demo: skipped {path} (not on this machine)")
            return
        filename = path.name if path.suffix else f"{path.name}.txt"
        with path.open("rb") as handle:
            outcome = knowledge.document_upload(collection=collection, file=File(handle), filename=filename)
        if outcome.action != "duplicate":
            self.stdout.write(f"demo: {collection.name}: {filename}: {outcome.message}")
