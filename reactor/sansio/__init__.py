"""The socket-free layer: state machines, buffers, timers, the connection table,
errors. Nothing here imports socket, select, selectors, threading or os
(tests/test_layering.py checks the whole folder).
"""
