"""Flux: the mirror of a Flux instance, the broker transport (the service
`annot`) and the clients through the broker (docs/flux.md).
"""
