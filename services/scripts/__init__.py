"""The script service: versioned, immutable FreeCAD scripts in S3 (see docs/scripts-service.md)."""
