"""Command-line tools that work on a config without training it (AOT compilation)."""
