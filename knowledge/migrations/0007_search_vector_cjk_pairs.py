"""Chinese, Japanese and Korean text indexed as overlapping character pairs.

PostgreSQL's parser keeps a run of CJK characters as one word: in Chinese a whole clause, which
no question ever matches. `groundwork_cjk_pairs(text)` rewrites each run as its overlapping
pairs ("台灣的首都" -> "台灣 灣的 的首 首都"; a lone character stays itself), set apart from
neighbouring letters and digits, which is how `common.text.terms` cuts CJK text; text without
CJK characters comes back unchanged, so its tsvector stays the same byte for byte. The chunk's
generated `search_vector` indexes that text, and the keyword side of a search applies the same
function to the question (knowledge.selectors).

PostgreSQL 16 cannot change a generated column's expression, so the column is dropped and added
again, which rewrites the table and rebuilds its GIN index and every collection's own partial
GIN index (knowledge.indexes.collection_index_create); ANALYZE then gives the keyword side the
column's word frequencies again. About 1 ms a chunk of English and 4 ms a chunk of 450 Chinese
characters on one core (the pairs cost ~3.5 µs a CJK character).
"""

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations, models

# Han ideographs (with extension A and compatibility), kana, and Hangul syllables: the ranges
# of common.text.CJK (tests/knowledge/test_retrieval.py holds the two to the same pairs).
_CJK = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]"

# Every CJK character with a CJK character on both sides is doubled ("ABCD" -> "AB BC CD"),
# then every run is padded with spaces so that the parser never joins it to a Latin word.
CREATE_FUNCTION = rf"""
CREATE FUNCTION groundwork_cjk_pairs(body text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN regexp_replace(
    regexp_replace(body, '(?<={_CJK})({_CJK})(?={_CJK})', '\1 \1', 'g'),
    '({_CJK}+)', ' \1 ', 'g'
);
"""
DROP_FUNCTION = "DROP FUNCTION IF EXISTS groundwork_cjk_pairs(text);"

# A collection's own GIN index (chunk_gin_collection_<id>) goes with the column it indexes: its
# definition is kept for the length of the migration's transaction and replayed afterwards.
SAVE_COLLECTION_INDEXES = """
CREATE TEMPORARY TABLE groundwork_collection_gin ON COMMIT DROP AS
SELECT indexdef FROM pg_indexes
WHERE schemaname = current_schema() AND tablename = 'knowledge_chunk'
AND indexname LIKE 'chunk\\_gin\\_collection\\_%';
"""
RESTORE_COLLECTION_INDEXES = """
DO $$
DECLARE definition text;
BEGIN
    FOR definition IN SELECT indexdef FROM groundwork_collection_gin LOOP
        EXECUTE definition;
    END LOOP;
END $$;
DROP TABLE groundwork_collection_gin;
"""


def _search_vector(text: object) -> models.GeneratedField:
    return models.GeneratedField(
        db_persist=True,
        expression=django.contrib.postgres.search.CombinedSearchVector(
            django.contrib.postgres.search.SearchVector(text, config="english"),
            "||",
            django.contrib.postgres.search.SearchVector(text, config="simple"),
            django.contrib.postgres.search.SearchConfig("english"),
        ),
        output_field=django.contrib.postgres.search.SearchVectorField(),
    )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0006_document_collection_chunks")]

    operations = [
        migrations.RunSQL("SET LOCAL maintenance_work_mem = '2GB'", migrations.RunSQL.noop),
        migrations.RunSQL(CREATE_FUNCTION, DROP_FUNCTION),
        migrations.RunSQL(SAVE_COLLECTION_INDEXES, RESTORE_COLLECTION_INDEXES),
        migrations.RemoveIndex(model_name="chunk", name="chunk_search_gin"),
        migrations.RemoveField(model_name="chunk", name="search_vector"),
        migrations.AddField(
            model_name="chunk",
            name="search_vector",
            field=_search_vector(
                models.Func("text", function="groundwork_cjk_pairs", output_field=models.TextField())
            ),
        ),
        migrations.AddIndex(
            model_name="chunk",
            index=django.contrib.postgres.indexes.GinIndex(fields=["search_vector"], name="chunk_search_gin"),
        ),
        migrations.RunSQL(RESTORE_COLLECTION_INDEXES, SAVE_COLLECTION_INDEXES),
        migrations.RunSQL("ANALYZE knowledge_chunk", "ANALYZE knowledge_chunk"),
    ]
