"""Plumbing shared by every service: settings, logging, topology, bus helpers, endpoint boundary."""
