"""Services extracted from the shop, each a separate process with a database of its own."""
