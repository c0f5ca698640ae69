"""Examples of your own models in vglab (`model = "examples.equinox_mlp:make"` in a spec)."""
