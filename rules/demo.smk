# Stage: demo (filled in by its issue).
