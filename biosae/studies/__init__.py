"""Across runs: the sweep aggregate over seeds and layers (aggregate) and the question-diversity
study over training-question settings (question_study)."""
