"""ssl_normals: surface normals for ssl_robust, registered through an entry point."""
