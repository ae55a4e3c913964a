"""The Gradio UI: compare, blind rating, results (issue 5). Calls steering/ and db/, holds no logic of its own."""
