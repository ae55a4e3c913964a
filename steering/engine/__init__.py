"""Load a model, find its neuron sites, hook it, generate in batches, attach per-row LoRA adapters."""
