"""Registries: the transport (both roads to a registry and the translation of their failures), the
distribution API client, credentials and the auth flow, TLS, and images of a registry repository
read and pushed through the layout interface."""
