"""Hostile clients on real sockets: each test is a probe that once got through.

Each module pins rows of the table of ways one client could cost the server
memory, CPU, disk or connection slots (docs/operations.md, "What one client
can cost the server").  Loops are bounded and sized for CI.
"""
