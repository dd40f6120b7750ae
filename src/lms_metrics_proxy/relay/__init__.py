"""The hot path: forward each request, stream the answer back, meter it.

Never touches the database: finished requests become Records handed to an
observer (the writer's queue and the metrics).
"""
