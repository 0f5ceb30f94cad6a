"""ptcopyd's D-Bus side: one module per interface (manager, iiset, iigroup, iioverflow, volume,
job), the bus connection (bus), the failure boundary (errors), the exported objects' registry
(registry) and the contract XML (contract). The domain (ptcopy.daemon.service) knows none of it."""
