"""The FreeCAD worker: runs every uploaded version headless in a sandbox and writes its outputs,
geometry report, log and processed marker to S3 (docs/worker.md)."""
