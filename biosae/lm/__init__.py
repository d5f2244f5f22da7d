"""Stage 2, the language model and what is read from it: the word tokenizer (tokenization), the
GPT-2 model, its training loop and loading (model), its QA accuracy per cell (qa_accuracy), the
answer-position activations of every hook point in one pass (activations, layers), and edited
answer-position passes on cached prompt prefixes (prompt_cache, last_token)."""
