"""Example apps: a web tier that enqueues tasks and polls their results (see
docs/integrations.md). Run from the repository's root."""
