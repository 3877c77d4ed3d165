"""The views: listings, the live model, `top`, the dashboard, the demo and
the accuracy table (docs/top.md, docs/dashboard.md).
"""
