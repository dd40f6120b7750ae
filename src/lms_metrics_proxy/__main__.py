"""Run the command line as `python -m lms_metrics_proxy`."""

from lms_metrics_proxy.cli import main

main()
