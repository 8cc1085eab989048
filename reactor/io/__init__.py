"""The I/O layer: the loop, the stream and datagram transports, listeners and outgoing
connections. The only code that calls select, accept, recv and send.
"""
