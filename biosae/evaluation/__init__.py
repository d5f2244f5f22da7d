"""Stage 4, evaluation of one run: read-out and baselines (baselines), every localization
method's edits and read-out derived from what the method is (edits), the tests shared by every
method (comparison, method_tests), the SAE's tests and metrics.json (evaluate, metrics), figures
(figures, plots), summary.md (report, method_summary, markdown) and the layer profile that opens
it (layer_profile). The methods it compares are their own package, biosae.methods, which never
imports this one."""
