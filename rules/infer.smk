# Stage: infer (filled in by its issue).
