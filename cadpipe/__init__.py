"""Shared code of the cadpipe services: bucket layout, settings, adapters, and the generated
protobuf code (cadpipe.v1)."""
