"""nerkit's Hydra plugins: Hydra only instantiates plugins that live in the hydra_plugins package."""
