"""Input and output guardrails: harmful requests, prompt injection, personal data, scope, tone, leaks."""
