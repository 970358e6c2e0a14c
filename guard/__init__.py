"""Guard layer (PII, prompt injection, YAML rules): issue #7. Not implemented yet."""
