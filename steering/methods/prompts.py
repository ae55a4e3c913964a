"""Chat prompts. A persona prompt (P², and identification) puts a persona description (second person) in the
system message and the question in the user message; the simple prompt puts one adjective phrase there; a
plain prompt is the question alone."""

from __future__ import annotations


def plain_chat(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def adjective_chat(adjective: str, question: str) -> list[dict]:
    """The simple prompt: the pole's adjective phrase ("an introverted person") in the system message."""
    return persona_chat(f"You are {adjective.strip()}. Answer every question as yourself, in the first person.",
                        question)


def persona_chat(description: str, question: str) -> list[dict]:
    return [{"role": "system", "content": description.strip()}, {"role": "user", "content": question}]
