"""Persona Studio's entry point (the Hugging Face Space's app_file): build the app from settings and launch it.

Settings come from the environment: PERSONA_STUDIO_MODEL (default "default", the embedded SmolLM2-135M-Instruct),
PERSONA_STUDIO_QUANTIZATION (default nf4), PERSONA_STUDIO_DEVICE (default auto).

The studio UI is not built yet: until it is, this loads the model, shows that steering works on it with one
question, and says so."""

from __future__ import annotations

import os
import sys

from steering import load_model
from steering.generation import Decoding, generate_chats
from steering.prompts import plain_chat


def main() -> int:
    lm = load_model(os.environ.get("PERSONA_STUDIO_MODEL", "default"),
                    quantization=os.environ.get("PERSONA_STUDIO_QUANTIZATION", "nf4"),
                    device=os.environ.get("PERSONA_STUDIO_DEVICE", "auto"))
    print(f"loaded {lm.identity.describe()} ({lm.quantization})")
    question = "Your neighbour invites you to a street party where you will know almost no one. What do you do?"
    [answer] = generate_chats(lm, [plain_chat(question)], Decoding(max_new_tokens=48))
    print(f"Q: {question}\nA: {answer.text}")
    print("The studio UI is not built yet (see the open issues); the engine is ready: python -m steering --help")
    return 0


if __name__ == "__main__":
    sys.exit(main())
