"""imgtrack's own OCI client: digests, references, layouts, registry API, auth and transfers."""
