"""Faults the proxy must survive: database, model server, clients, shutdown."""
