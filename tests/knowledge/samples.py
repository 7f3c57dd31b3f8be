"""Files for the knowledge tests, generated here rather than checked in."""

from __future__ import annotations

import io

from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

HANDBOOK = """# Staff handbook

## Leave

Every employee gets twenty-five days of annual leave per calendar year.
Unused leave carries over until the end of March.

## Expenses

Submit receipts within thirty days. Travel is reimbursed at economy fares.
"""

CORRUPT_PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8


def text_pdf(*pages: str, title: str | None = None) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    if title:
        pdf.set_title(title)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def encrypted_pdf(text: str, password: str = "secret") -> bytes:  # noqa: S107 (a test file's password)
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf(text))))
    writer.encrypt(user_password=password, owner_password="owner-" + password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
