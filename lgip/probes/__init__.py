"""The probes' own maths: what each probe computes from embeddings, pixels and labels,
apart from loading, encoding and writing (the engine's job) and flags (the scripts')."""
