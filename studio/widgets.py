"""What every page shares: the refusals a page shows as one line where the user is looking (never a toast or an
error badge), Markdown escaping for text that is not markup, the client address the limits count, and the notice
line every page carries."""

from __future__ import annotations

import html

import gradio as gr

from db import StoreBusy
from steering.methods.dispatch import MethodUnavailable

from .core import Studio
from .limits import Busy, TooMany, client_address

REFUSALS = (ValueError, StoreBusy, MethodUnavailable, TooMany, Busy)  # shown as one line; RatingRefused included


def client_of(studio: Studio, request: gr.Request | None) -> str:
    """The address the limits count for a page event."""
    if request is None:
        return "local"
    return client_address(getattr(request.client, "host", None), dict(request.headers), studio.limits.trust_proxy)


def warning(exc: Exception | str) -> str:
    """One line of Markdown for a refusal, shown where the user is looking (never a toast or an error badge)."""
    return f"⚠️ {escape(str(exc))}"


def escape(text: str) -> str:
    """Text shown in Markdown: escape what Markdown or HTML would interpret."""
    return html.escape(text).replace("*", "\\*").replace("_", "\\_").replace("`", "\\`").replace("[", "\\[")


def notice_line(studio: Studio) -> None:
    """The studio's notice (e.g. ratings on a Space's temporary disk) at the top of a page, where it has one."""
    if studio.notice:
        gr.Markdown(f"⚠️ {studio.notice}", elem_classes=["studio-notice"])
