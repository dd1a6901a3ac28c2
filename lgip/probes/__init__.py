"""The probes' maths: closed-form and array code that the probe scripts call, with no
model and no torch in it (semantic certification today)."""
