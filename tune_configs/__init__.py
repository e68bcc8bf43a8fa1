"""Tuned kernel configurations shipped with the package: one ``<device>.json`` per device, each
written by ``python -m mse_grad_triton.tune`` on that device. Only measured tables belong here."""
