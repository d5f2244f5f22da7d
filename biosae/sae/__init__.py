"""Stage 3, the supervised 6-slot SAE: the model (model), its training loop with the alignment,
independence and value losses (training), and the rows it trains on (inputs)."""
