"""Stage 4, evaluation of one run: read-out and baselines (baselines), edits inside the LM's
forward pass (interventions), the tests and their metrics (evaluate, metrics), figures (figures,
plots), summary.md (report) and the layer profile that opens it (layer_profile). The localization
methods it compares are their own package, biosae.methods."""
