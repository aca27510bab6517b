"""mtlzoo's own plugins. Each module is an entry point of group ``mtlzoo`` declared in
setup.cfg, loaded by the same machinery as any third-party plugin."""
