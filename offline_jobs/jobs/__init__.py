"""The profile job: runner, resumable cache, builder, embedding."""
