"""The `dynamicfs` command line."""
