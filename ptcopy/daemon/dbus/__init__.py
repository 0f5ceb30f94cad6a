"""ptcopyd's D-Bus side: one module per interface (manager, iiset, iigroup, iioverflow, volume,
job) on a common base (interface); the bus connection (bus), who may mutate (auth), the failure
boundary (errors), object paths (paths), what objects may ask of the daemon (context), the
exported objects' registry (registry), clients leaving (clients) and the contract XML
(contract). The domain (ptcopy.daemon.service) knows none of it."""
