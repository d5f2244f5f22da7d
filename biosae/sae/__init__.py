"""The SAEs: the supervised 6-slot SAE of stage 3 (model; its training loop with the alignment,
independence and value losses, training; the rows it trains on, inputs) and the unsupervised TopK
SAE it is compared with (topk), both with the layer axis of layer_axis."""
