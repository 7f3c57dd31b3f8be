from django.db import migrations

# The language-neutral side of keyword search: words as written (no stemming, so any language
# matches), without English stopwords, which would otherwise match almost every chunk once a
# question's words are ORed. Used on the query side only; the stored tsvector keeps "simple".
CREATE = """
CREATE TEXT SEARCH DICTIONARY groundwork_simple_stop (TEMPLATE = pg_catalog.simple, STOPWORDS = english);
CREATE TEXT SEARCH CONFIGURATION groundwork_simple (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION groundwork_simple
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword, hword_part, hword_asciipart, hword_numpart
    WITH groundwork_simple_stop;
"""
DROP = """
DROP TEXT SEARCH CONFIGURATION IF EXISTS groundwork_simple;
DROP TEXT SEARCH DICTIONARY IF EXISTS groundwork_simple_stop;
"""


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP)]
