"""LMS Metrics Proxy: a transparent proxy for local LLM servers that records usage."""

__version__ = "0.1.0"
