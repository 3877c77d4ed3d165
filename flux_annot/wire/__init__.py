"""The wire: the protocol's frames, the transport-independent dispatch, the
Unix-socket transport and server, and the clients (docs/protocol.md).
"""
