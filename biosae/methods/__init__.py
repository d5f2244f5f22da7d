"""Localization methods: where does the LM keep "which attribute is asked"?

One room per method. A method says only what it is (biosae.methods.base: a featurizer, or a
subspace); the evaluation derives every test from that (biosae.evaluation.edits,
biosae.evaluation.comparison), so that every method is tested the same way on the same prompts.
Adding a method is one module and its line in biosae.methods.registry (docs/adding-a-method.md).

- ``sae_slot``          the supervised 6-slot SAE (biosae.sae.model), error term kept
- ``diffmean``          AxBench's difference of class means
- ``probe``             the linear probe's class directions
- ``das``               distributed alignment search: a trained rank-k orthonormal subspace
- ``sae_unsupervised``  a TopK SAE trained without labels, the best latent per rule (AxBench SAE-A)
- ``random``            the control: random directions and a random subspace

Nothing here imports biosae.evaluation: the evaluation imports the methods.
"""
