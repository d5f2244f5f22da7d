"""Stage 1, the dataset: persons and their attributes (entities), biographies and QA rows
(build), the question wordings per rule and their content-word check (questions,
question_templates), and the text normalization they share (text)."""
