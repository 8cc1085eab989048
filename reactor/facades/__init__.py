"""The standard library's socketserver servers as facades over the reactor: the
servers, the mix-ins, the request pipeline. Assembled for users by
:mod:`reactor.socketserver`.
"""
