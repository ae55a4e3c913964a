"""The ways to answer as a trait pole: prompts (simple, P²) from the persona bank, the trait corpus, LoRA fine-tuning,
activation vectors, and `dispatch`, which answers a mixed batch of methods in one generate call."""
