"""The thin HTTP API: answers payers from what the followers credited."""
