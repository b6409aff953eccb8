"""The watcher: decides each version's outcome from S3, publishes its completion event once, and
serves status (StatusService) and artifacts (ArtifactService). See docs/watcher.md."""
