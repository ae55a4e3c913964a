"""Chat prompts. A persona prompt puts the persona description (second person) in the system message and the
question in the user message; a plain prompt is the question alone."""

from __future__ import annotations


def plain_chat(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def persona_chat(description: str, question: str) -> list[dict]:
    return [{"role": "system", "content": description.strip()}, {"role": "user", "content": question}]
