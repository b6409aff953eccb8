"""Shared code of the cadpipe services: bucket layout, settings, adapters, generated protobuf code (cadpipe.v1)."""
