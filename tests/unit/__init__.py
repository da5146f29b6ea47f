"""The unit tier: pure logic with fakes, no sockets, no processes, no sleeping.

    python -m twisted.trial tests.unit      # a few seconds
"""
