"""Retention (``loopline gc``): what can be removed, decided by pure planners (``plan``) from an inventory of
candidates (``inventory``) and of what is still referenced (``references``); ``sweep`` deletes."""
