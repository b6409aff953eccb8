"""The cadpipe services, one package each."""
