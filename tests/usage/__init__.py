"""Tests of lms_metrics_proxy.usage: bytes in, usage out, no I/O."""
