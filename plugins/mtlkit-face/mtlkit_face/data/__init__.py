"""Face datasets (CK+48 folders, CSV manifests, drawn faces) sharing leak-free split protocols.

Kept import-light: each dataset module is imported by the registry only when it is used.
"""
