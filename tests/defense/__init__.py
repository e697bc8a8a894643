"""Defense layers end to end: attack simulation, fleet-wide guard, kill switch, rotation."""
