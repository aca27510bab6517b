"""The machinery that loads plugins and builds: registries, the loader, specs, the Zoo."""
