"""One blueprint per URL family, each module's blueprint named `bp`."""
