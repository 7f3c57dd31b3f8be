from django.db import migrations

# A chunk row (text + tsvector + a 384-float vector) passes PostgreSQL's 2 kB TOAST threshold, so
# the vector could be moved out of line and de-toasted on every row an exact scan reads. PLAIN
# keeps it in the row. Rows written before this keep their storage until rewritten (re-index).


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_search_configuration")]
    operations = [
        migrations.RunSQL(
            "ALTER TABLE knowledge_chunk ALTER COLUMN embedding SET STORAGE PLAIN",
            "ALTER TABLE knowledge_chunk ALTER COLUMN embedding SET STORAGE EXTENDED",
        )
    ]
