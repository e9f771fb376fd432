"""Test support shipped with strangler: real-service fixtures and conformance suites.

Used by strangler's own tests and by third-party routers that want the same proof.
"""
