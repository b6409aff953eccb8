"""cadpipe, the command line."""
