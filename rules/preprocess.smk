# Stage: preprocess (filled in by its issue).
