# Stage: slices (filled in by its issue).
