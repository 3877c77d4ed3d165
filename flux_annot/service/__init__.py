"""The service: life cycle, policy, limits, events, the store, estimate accuracy.

Transport-free: `service.AnnotationService` is what every transport and
the in-process API call (docs/DESIGN.md, module map).
"""
