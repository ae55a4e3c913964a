"""Neuron-based personality trait induction (NPTI, ICLR 2025): record neuron firing under each pole (generated
answers, or our corpus read by teacher forcing), identify the neurons whose firing differs, store them as profiles,
and shift them while the model writes."""
