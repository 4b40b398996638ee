"""The generator of a pack: a DCGAN trained here on rendered faces, or the imported, frozen
DigiFace DCGAN of a wheel (cfg.generator; `gan.load_generator` gives either)."""
