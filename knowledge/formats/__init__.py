"""The format parsers behind knowledge.parsing.parse_document, one module a format."""
