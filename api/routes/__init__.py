"""One module per surface of the API."""
